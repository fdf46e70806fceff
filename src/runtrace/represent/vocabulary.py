"""A model's vocabulary: the token strings it has an embedding for, fitted on training data only.

A dataset's *lexicon* lists every token string the dataset contains, training and test files alike; it
learns nothing.  A `Vocabulary` is what a model learns from: it is fitted on the tokens of training files
only, so a token seen only in test files maps to OOV exactly as an unseen token would in deployment.
The vocabulary is stored as strings (not lexicon ids), so a saved model reads any dataset, whatever
order its lexicon happens to be in.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Sequence

import numpy as np

PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"


class Vocabulary:
    PAD = 0
    OOV = 1

    def __init__(self, tokens: Sequence[str]) -> None:
        """`tokens` are the in-vocabulary strings; ids 0 (PAD) and 1 (OOV) are added in front."""
        self.tokens: list[str] = [PAD_TOKEN, OOV_TOKEN, *tokens]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")
        # lexicon object -> lookup table; weak so a dropped dataset frees its table.
        self._tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    @classmethod
    def fit(
        cls,
        lexicon: Sequence[str],
        documents: Iterable[np.ndarray],
        *,
        min_count: int = 1,
        min_documents: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Keep the lexicon ids that occur at least `min_count` times in all and in at least
        `min_documents` documents (a document is normally one training file).

        The document threshold matters more than the count: a token that appears in one file only —
        however often — is that file's fingerprint, and an embedding for it teaches memorisation.
        Most frequent first (ties by lexicon id, so fitting is deterministic); `max_size` caps the size.
        """
        docs = [np.asarray(d, dtype=np.int64) for d in documents]
        n = len(lexicon)
        if docs:
            total = np.bincount(np.concatenate(docs), minlength=n)
            per_doc = np.bincount(np.concatenate([np.unique(d) for d in docs]), minlength=n)
        else:
            total = per_doc = np.zeros(n, dtype=np.int64)
        keep = np.flatnonzero((total >= max(min_count, 1)) & (per_doc >= min_documents))
        keep = keep[np.lexsort((keep, -total[keep]))]
        if max_size is not None:
            keep = keep[: max(max_size - 2, 0)]
        return cls([lexicon[i] for i in keep.tolist()])

    def lookup_table(self, lexicon: Sequence[str]) -> np.ndarray:
        """int64 array: lexicon id -> vocabulary id (OOV where the string is not in the vocabulary).

        Cached per lexicon object: building it costs one dict lookup per lexicon entry."""
        try:
            table = self._tables.get(lexicon)
        except TypeError:  # a plain list cannot be weakly referenced: no caching
            table = None
        if table is not None and len(table) == len(lexicon):  # a grown lexicon needs a new table
            return table
        get = self.index.get
        table = np.fromiter((get(t, self.OOV) for t in lexicon), dtype=np.int64, count=len(lexicon))
        with contextlib.suppress(TypeError):
            self._tables[lexicon] = table
        return table

    def __getstate__(self) -> dict:
        # The lookup-table cache holds weak references, which cannot be pickled; it is rebuilt on demand.
        return {"tokens": self.tokens}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tokens"][2:])

    def encode(self, ids: np.ndarray, lexicon: Sequence[str]) -> np.ndarray:
        return self.lookup_table(lexicon)[np.asarray(ids, dtype=np.int64)]

    def to_json(self) -> dict:
        return {"tokens": self.tokens[2:]}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        tokens = obj["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("vocabulary: 'tokens' must be a list of strings")
        return cls(tokens)


class Lexicon(list):
    """A list of token strings that can be weakly referenced and hashed by identity, so vocabularies can
    cache their lookup table per dataset lexicon."""

    __slots__ = ("__weakref__",)
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, list) and list.__eq__(self, other))

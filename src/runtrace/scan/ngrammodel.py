"""A saved n-gram model (`ngram-lgbm`) run by ONNX Runtime: what `scan` and `serve` score with.

The model directory (`runtrace.models.spec`, `runtrace.models.ngram_checkpoint`) holds the tokens and
n-grams its trees read (`vocabulary.json`) and the trees as one ONNX graph (`model.onnx`), loaded only
after its sha256 matches the one `config.json` records, which in turn names the booster
(`model.lgbm.txt`) and the vocabulary it was converted with.  LightGBM is never imported.

A trace is read as training read it: encoded with the model's representation and settings
(`runtrace.represent.encode_trace`), its tokens mapped to the training lexicon's ids by string (a token
the model does not list reads as the unknown id), every n-gram keyed by the training code's own
`ngram_keys`, and the feature row is the count of each vocabulary n-gram, the graph's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.models.ngram import NGRAM_CLASSES, ngram_keys, ngram_spans, vocabulary_columns
from runtrace.models.spec import NGRAM_GRAPHS, NgramSpec, one_line
from runtrace.represent.encode import EncodedTrace
from runtrace.scan.onnxmodel import ModelError, graph_session, read_exported
from runtrace.scan.sequence import WHOLE_SEQUENCE

# Feature rows per ONNX Runtime run: a row is 4 bytes per n-gram the trees read (a few thousand).
MAX_ROWS_PER_RUN = 256


@dataclass
class NgramOccurrences:
    """Where the vocabulary's n-grams occur in one sequence: one entry per occurrence."""

    starts: np.ndarray  # int64 first sequence position
    sizes: np.ndarray  # int64 order (tokens it spans)
    columns: np.ndarray  # int64 feature column (position in the vocabulary)


class NgramModel:
    """An `ngram-lgbm` model directory's vocabulary and graph, for inference and attribution."""

    window = WHOLE_SEQUENCE  # one "window": the whole (max_tokens-cut) sequence
    aggregation = "none"  # one score per trace, nothing to aggregate
    # What an occluded unit reads as (docs/scan.md): every n-gram through it leaves the vocabulary.
    baseline_description = "the unknown token, which no n-gram of the vocabulary contains"
    # The calibration's map from the graph's score to the P a scan reports (`scan.calibration`); set by
    # the scanner, None: the score itself.
    probability_map = None

    def __init__(self, spec: NgramSpec, vocabulary: dict, session, path: str, weights_sha256: str) -> None:
        self.spec = spec
        self.path = path
        self.weights_sha256 = weights_sha256
        self.kind = spec.kind
        # Monotone trees: no n-gram can lower the score, so no unit can point towards benign.
        self.evidence_only = NGRAM_CLASSES[spec.kind].monotone
        self.representation = spec.representation
        data = spec.data_spec
        self.normalisation, self.api, self.max_tokens = data.normalisation, data.api, data.max_tokens
        self.api_args = data.api_args
        self.min_instructions = spec.min_instructions
        self.tracer_versions = data.tracer_versions
        self.orders = tuple(spec.featurizer.orders)
        self.token_space = spec.featurizer.token_space
        self.unknown = self.token_space - 1
        tokens, ids = vocabulary["tokens"], vocabulary["token_ids"]
        if not isinstance(tokens, list) or not isinstance(ids, list) or len(tokens) != len(ids):
            raise ValueError("tokens and token_ids must be lists of one length")
        if any(not 0 <= int(i) < self.unknown for i in ids):
            raise ValueError(f"token ids must lie below token_space - 1 = {self.unknown}")
        self.token_index = dict(zip(tokens, (int(i) for i in ids), strict=True))
        self.ngrams = np.asarray(vocabulary["ngrams"], dtype=np.uint64)
        if np.any(self.ngrams[1:] <= self.ngrams[:-1]):
            raise ValueError("ngrams must be sorted and distinct")
        self.n_features = len(self.ngrams)
        width = session.get_inputs()[0].shape[1]
        if width != self.n_features:
            raise ValueError(f"the graph reads {width} features, vocabulary.json lists {self.n_features}")
        self._session = session
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: str | Path) -> NgramModel:
        root = Path(path)
        spec, vocabulary = read_exported(root, NgramSpec, "an n-gram model", "graph")
        session = graph_session(root, NGRAM_GRAPHS["trees"], "trees", spec.onnx.graphs.get("trees"))
        try:
            return cls(spec, vocabulary, session, str(root), spec.onnx.weights_sha256)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as e:
            raise ModelError(f"{root}: inconsistent model files ({one_line(e)})") from None

    # --- a trace's features -----------------------------------------------------------------------
    def token_ids(self, encoded: EncodedTrace) -> np.ndarray:
        """The encoded trace's sequence as the training lexicon's ids (unknown tokens: `unknown`)."""
        get, unknown = self.token_index.get, self.unknown
        lexicon = encoded.lexicon
        local = np.fromiter((get(t, unknown) for t in lexicon), dtype=np.int64, count=len(lexicon))
        return local[encoded.sequence] if len(encoded.sequence) else np.zeros(0, dtype=np.int64)

    def occurrences(self, ids: np.ndarray) -> NgramOccurrences:
        """Every occurrence of a vocabulary n-gram in the sequence `ids`."""
        columns = vocabulary_columns(self.ngrams, ngram_keys(ids, self.token_space, self.orders))
        starts, sizes = ngram_spans(len(ids), self.orders)
        hit = columns >= 0
        return NgramOccurrences(starts[hit], sizes[hit], columns[hit])

    def features(self, occurrences: NgramOccurrences) -> np.ndarray:
        """(n_features,) float32: how often each vocabulary n-gram occurs."""
        return np.bincount(occurrences.columns, minlength=self.n_features).astype(np.float32)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(malicious) of each feature row of x (B, n_features), float64."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty(len(x), dtype=np.float64)
        for begin in range(0, len(x), MAX_ROWS_PER_RUN):
            part = x[begin : begin + MAX_ROWS_PER_RUN]
            (p,) = self._session.run(["probabilities"], {self._input: part})
            out[begin : begin + len(part)] = p[:, 1]
        return out if self.probability_map is None else self.probability_map(out)

"""An index of known programs' code signatures, queried for the nearest ones by estimated Jaccard.

Locality-sensitive hashing as datasketch's `MinHashLSH` does it — the signature cut into `b` bands of `r`
values, two signatures candidates when a band agrees — with `b` and `r` chosen by datasketch for the
threshold, but the band keys kept as sorted arrays rather than in datasketch's in-memory dictionaries.
Why not datasketch's index itself: it must be rebuilt from the signatures, in Python, every time it is
loaded (tens of seconds at a million entries, a third of a second even at the corpus's ten thousand,
on every `runtrace scan`), and its persistent backends are database servers; pickling it into the model
directory would make loading a shipped file execute code.  Arrays load in milliseconds and safely.

On disk (a directory, usually `similar/` beside a model): `index.json` (format, version, parameters,
sha256 of each file), `permutations.npy` (uint64, 2 x NUM_PERM: the MinHash permutations the
signatures were made with, which queries use), `signatures.npy` (uint32, entries x NUM_PERM: blocks),
`api_signatures.npy`,
`sizes.npy` (int64, entries x 2: distinct blocks, API n-grams), `band_keys.npy` (uint64, bands x
entries, each row sorted) with `band_order.npy` (int64: the entry of each sorted key), and
`entries.json` (the known files, column by column: sha256, label, family, origin, ...; JSON rather than
Parquet because `scan` loads the index and its start-up imports no pyarrow, `docs/scan.md`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.similar.signature import (
    API_NGRAM,
    NORMALISATION,
    NUM_PERM,
    SEED,
    CodeSignature,
    permutations,
    signature_of,
)

FORMAT = "runtrace-similarity-index"
VERSION = 1
THRESHOLD = 0.3  # candidates are found with high probability from an estimated Jaccard of about this
_ARRAYS = ("signatures", "api_signatures", "sizes", "band_keys", "band_order", "permutations")
# Odd 64-bit multipliers that fold a band's r values into one key (the values are already hashes).
_FOLD = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
                  0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD],
                 dtype=np.uint64)  # fmt: skip


class IndexFileError(ValueError):
    """An index directory that cannot be used (one line naming the directory and the problem)."""


@dataclass(frozen=True)
class Neighbour:
    entry: dict  # the known file's row: sha256, label, family, origin, ...
    jaccard: float  # estimated Jaccard similarity of the executed blocks
    shared_blocks: int  # estimated number of distinct blocks both executed
    api_jaccard: float  # estimated Jaccard similarity of the API-call n-grams


def lsh_shape(threshold: float = THRESHOLD) -> tuple[int, int]:
    """(bands, rows per band) for the threshold, as datasketch chooses them."""
    from datasketch import MinHashLSH  # only when an index is built: see signature.py on its import

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    return lsh.b, lsh.r


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 (bands x entries): each band's values folded into one key."""
    sig = np.atleast_2d(signatures).astype(np.uint64)
    keys = np.empty((bands, len(sig)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            part = sig[:, b * rows : (b + 1) * rows]
            folded = (part * _FOLD[:rows]).sum(axis=1, dtype=np.uint64)
            keys[b] = folded ^ (folded >> np.uint64(29)) ^ np.uint64(b)
    return keys


class Entries(Sequence):
    """The known files of a loaded index, kept as entries.json's columns; a row becomes a dict only when
    asked for (a scan shows five of them: making all ten thousand dicts was most of loading the index)."""

    def __init__(self, columns: dict[str, list]) -> None:
        if not isinstance(columns, dict) or not all(isinstance(c, list) for c in columns.values()):
            raise TypeError("not a JSON object of columns")
        if len({len(c) for c in columns.values()}) > 1:
            raise ValueError("columns of different lengths")
        self._columns = columns
        self._n = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError("entry index out of range")
        return {name: column[i] for name, column in self._columns.items()}


def _array(data: bytes) -> np.ndarray:
    """The array a .npy file's bytes hold, read-only over those bytes: np.load would copy all of them
    (the bytes are read whole anyway, to check their sha256 first)."""
    from numpy.lib import format as npy

    buffer = io.BytesIO(data)
    version = npy.read_magic(buffer)
    if version not in ((1, 0), (2, 0)):  # what np.save writes; anything else the slower way
        return np.load(io.BytesIO(data), allow_pickle=False)
    read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran, dtype = read_header(buffer)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=buffer.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


class SimilarityIndex:
    def __init__(self, entries: list[dict], signatures, api_signatures, sizes, threshold: float = THRESHOLD):
        self.entries = entries
        self.signatures = np.asarray(signatures, dtype=np.uint32).reshape(-1, NUM_PERM)
        self.api_signatures = np.asarray(api_signatures, dtype=np.uint32).reshape(-1, NUM_PERM)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        if not (len(entries) == len(self.signatures) == len(self.api_signatures) == len(self.sizes)):
            raise ValueError("one entry, signature and size per indexed file")
        self.threshold = threshold
        self.path: str | None = None  # the directory it was loaded from
        self.digest: str | None = None  # sha256 of its index.json (which holds every file's sha256)
        self.permutations = permutations()
        self.bands, self.rows = lsh_shape(threshold)
        keys = band_keys(self.signatures, self.bands, self.rows)
        self.band_order = np.argsort(keys, axis=1, kind="stable")
        self.band_keys = np.take_along_axis(keys, self.band_order, axis=1)

    @classmethod
    def build(cls, entries: list[dict], signatures: list[CodeSignature]) -> SimilarityIndex:
        if not signatures:
            return cls([], np.zeros((0, NUM_PERM)), np.zeros((0, NUM_PERM)), np.zeros((0, 2)))
        return cls(
            entries,
            np.stack([s.blocks for s in signatures]),
            np.stack([s.apis for s in signatures]),
            np.array([[s.n_blocks, s.n_api_ngrams] for s in signatures]),
        )

    def __len__(self) -> int:
        return len(self.entries)

    def signature(self, i: int) -> CodeSignature:
        """The signature entry i was indexed with."""
        return CodeSignature(
            self.signatures[i], int(self.sizes[i, 0]), self.api_signatures[i], int(self.sizes[i, 1])
        )

    # --- queries ---------------------------------------------------------------------------------------
    def sign(self, trace) -> CodeSignature:
        """A trace's signature as this index compares it (its permutations; datasketch not imported)."""
        return signature_of(trace, self.permutations)

    def candidates(self, signature: CodeSignature) -> np.ndarray:
        """Entries sharing at least one band with the signature (empty for a trace without blocks)."""
        if signature.n_blocks == 0 or len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        query = band_keys(signature.blocks, self.bands, self.rows)[:, 0]
        found = []
        for b in range(self.bands):
            row = self.band_keys[b]
            lo = np.searchsorted(row, query[b], side="left")
            hi = np.searchsorted(row, query[b], side="right")
            if hi > lo:
                found.append(self.band_order[b, lo:hi])
        if not found:
            return np.zeros(0, dtype=np.int64)
        # Sorted and distinct, as np.unique would give them; numpy 2.4's np.unique imports numpy.ma on
        # its first call (about 8 ms of CPU of a one-file `runtrace scan`, measured).
        found = np.sort(np.concatenate(found))
        return found[np.concatenate(([True], found[1:] != found[:-1]))]

    def nearest(
        self,
        signature: CodeSignature,
        k: int = 5,
        exclude: str | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[Neighbour]:
        """The k known files whose executed blocks are most alike (estimated Jaccard), best first; only
        files found by the index (about THRESHOLD or more alike), never the file itself (`exclude`, a
        sha256) nor entries `allowed` (a boolean per entry) rules out."""
        cand = self.candidates(signature)
        cand = cand[self.sizes[cand, 0] > 0]
        if allowed is not None:
            cand = cand[allowed[cand]]
        if exclude is not None and len(cand):
            cand = np.array(
                [i for i in cand.tolist() if self.entries[i].get("sha256") != exclude], dtype=np.int64
            )
        if len(cand) == 0:
            return []
        jaccard = (self.signatures[cand] == signature.blocks).mean(axis=1)
        order = np.argsort(-jaccard, kind="stable")[:k]
        out = []
        for i in order.tolist():
            j, entry = float(jaccard[i]), cand[i]
            both = self.sizes[entry, 0] + signature.n_blocks
            api = (self.api_signatures[entry] == signature.apis).mean() if signature.n_api_ngrams else 0.0
            if self.sizes[entry, 1] == 0:
                api = 0.0
            out.append(
                Neighbour(self.entries[entry], round(j, 4), round(j * both / (1 + j)), round(float(api), 4))
            )
        return out

    # --- files -----------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "signatures": self.signatures,
            "api_signatures": self.api_signatures,
            "sizes": self.sizes,
            "band_keys": self.band_keys,
            "band_order": self.band_order,
            "permutations": self.permutations,
        }
        digests = {}
        for name, array in arrays.items():
            path = directory / f"{name}.npy"
            np.save(path, array, allow_pickle=False)
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        fields = list(dict.fromkeys(f for e in self.entries for f in e))
        columns = {f: [e.get(f) for e in self.entries] for f in fields}
        entries_json = json.dumps(columns, separators=(",", ":")).encode()
        (directory / "entries.json").write_bytes(entries_json)
        digests["entries"] = hashlib.sha256(entries_json).hexdigest()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "entries": len(self),
            "num_perm": NUM_PERM,
            "seed": SEED,
            "normalisation": str(NORMALISATION),
            "api_ngram": API_NGRAM,
            "threshold": self.threshold,
            "bands": self.bands,
            "rows": self.rows,
            "sha256": digests,
        }
        (directory / "index.json").write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityIndex:
        directory = Path(directory)
        try:
            meta_bytes = (directory / "index.json").read_bytes()
            meta = json.loads(meta_bytes)
        except (OSError, ValueError) as e:
            raise IndexFileError(f"{directory}: not a similarity index ({e})") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise IndexFileError(f"{directory}: not a similarity index of version {VERSION}")
        if (meta.get("num_perm"), meta.get("seed"), meta.get("normalisation")) != (
            NUM_PERM,
            SEED,
            str(NORMALISATION),
        ):
            raise IndexFileError(f"{directory}: built with other signature parameters than this runtrace's")
        arrays = {}
        for name in _ARRAYS:
            path = directory / f"{name}.npy"
            try:
                data = path.read_bytes()
            except OSError as e:
                raise IndexFileError(f"{directory}: {path.name} is missing ({e.strerror})") from None
            if hashlib.sha256(data).hexdigest() != meta["sha256"].get(name):
                raise IndexFileError(f"{directory}: {path.name} does not match its sha256 in index.json")
            arrays[name] = _array(data)
        try:
            data = (directory / "entries.json").read_bytes()
        except OSError as e:
            raise IndexFileError(f"{directory}: entries.json is missing ({e.strerror})") from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"].get("entries"):
            raise IndexFileError(f"{directory}: entries.json does not match its sha256 in index.json")
        try:
            entries = Entries(json.loads(data))
        except (ValueError, TypeError, AttributeError) as e:
            raise IndexFileError(f"{directory}: entries.json is not a table of known files ({e})") from None
        index = cls.__new__(cls)
        index.entries = entries
        index.signatures, index.api_signatures = arrays["signatures"], arrays["api_signatures"]
        index.sizes, index.band_keys, index.band_order = (
            arrays["sizes"],
            arrays["band_keys"],
            arrays["band_order"],
        )
        index.permutations = arrays["permutations"]
        index.threshold, index.bands, index.rows = meta["threshold"], meta["bands"], meta["rows"]
        index.path, index.digest = str(directory), hashlib.sha256(meta_bytes).hexdigest()
        if len(entries) != len(index.signatures):
            raise IndexFileError(f"{directory}: entries.json and the signatures disagree")
        return index

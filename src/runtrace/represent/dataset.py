"""A labelled set of traces as token sequences (ISM) or block sequences (BSM), stored compactly.

In memory and on disk the sequences are one flat integer array plus per-file offsets (never Python
lists), so a corpus of thousands of traces loads in milliseconds by memory-mapping.  On disk a dataset
is a directory:

| file                          | content                                                           |
| ----------------------------- | ----------------------------------------------------------------- |
| `dataset.json`                | format, version, representation, normalisation, api[_args], meta  |
| `files.parquet`               | one row per file: sha256, label, group, arch, kind, ...           |
| `lexicon.parquet`             | token strings; row number = token id                              |
| `tokens.npy`, `offsets.npy`   | all sequences concatenated (uint16 or int32); n_files+1 offsets   |
| `instruction_lexicon.parquet` | BSM: instruction token strings                                    |
| `block_tokens.npy`, `block_offsets.npy` | BSM: instruction ids of every block key, concatenated   |

Nothing is pickled: numpy arrays load with `allow_pickle=False`, the rest is JSON and Parquet.
The lexicon lists every token of every file and learns nothing; models fit their own `Vocabulary` on
training files only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runtrace.represent.encode import BSM, ISM, REPRESENTATIONS, EncodedTrace, encode_trace
from runtrace.represent.normalise import Normalisation
from runtrace.represent.vocabulary import Lexicon
from runtrace.trace.formats.registry import load_any
from runtrace.trace.model import Trace

FORMAT_NAME = "runtrace-dataset"
FORMAT_VERSION = 1
LABELS = {"benign": 0, "malicious": 1}

FILE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("label", pa.int8()),
        ("group", pa.string()),
        ("arch", pa.string()),
        ("kind", pa.string()),
        ("n_instructions", pa.int64()),
        ("stop_reason", pa.string()),
        ("source", pa.string()),
        ("n_tokens", pa.int64()),
        ("n_api_calls", pa.int64()),
        ("tracer_version", pa.string()),  # the tracer revision that wrote the trace (null: not known)
    ]
)


class DatasetError(ValueError):
    """A dataset directory that cannot be read, or inputs that cannot make one."""


class SequenceDataset:
    """Token sequences of labelled files.  `sequence(i)` is file i's whole sequence of lexicon ids."""

    def __init__(
        self,
        representation: str,
        files: pa.Table,
        lexicon: Sequence[str],
        tokens: np.ndarray,
        offsets: np.ndarray,
        *,
        normalisation: str,
        api: bool,
        api_args: bool = False,
        instruction_lexicon: Sequence[str] | None = None,
        block_tokens: np.ndarray | None = None,
        block_offsets: np.ndarray | None = None,
        meta: dict | None = None,
    ) -> None:
        if representation not in REPRESENTATIONS:
            raise DatasetError(f"unknown representation {representation!r}")
        if len(offsets) != files.num_rows + 1:
            raise DatasetError("offsets must have one entry per file plus one")
        self.representation = representation
        self.files = files
        self.lexicon = lexicon if isinstance(lexicon, Lexicon) else Lexicon(lexicon)
        self.tokens = tokens
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.normalisation = str(Normalisation(normalisation))
        self.api = bool(api)
        self.api_args = bool(api_args)  # API tokens followed by their argument classes
        self.meta = dict(meta or {})
        if representation == BSM:
            if instruction_lexicon is None or block_tokens is None or block_offsets is None:
                raise DatasetError("a BSM dataset needs instruction_lexicon, block_tokens and block_offsets")
            if len(block_offsets) != len(self.lexicon) + 1:
                raise DatasetError("block_offsets must have one entry per block key plus one")
            self.instruction_lexicon = (
                instruction_lexicon
                if isinstance(instruction_lexicon, Lexicon)
                else Lexicon(instruction_lexicon)
            )
            self.block_flat = block_tokens
            self.block_offsets = np.asarray(block_offsets, dtype=np.int64)
        else:
            # ISM: the tokens *are* instruction tokens.
            self.instruction_lexicon = self.lexicon
            self.block_flat = None
            self.block_offsets = None

    # --- the interface the models and the evaluation code use -----------------------------------------
    def __len__(self) -> int:
        return self.files.num_rows

    def labels(self) -> np.ndarray:
        return self.files.column("label").to_numpy().astype(np.int64)

    def groups(self) -> np.ndarray:
        return np.asarray(self.files.column("group").to_pylist(), dtype=object).astype(str)

    def sha256s(self) -> list[str]:
        return self.files.column("sha256").to_pylist()

    def lengths(self) -> np.ndarray:
        """Sequence length (tokens or blocks) per file."""
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.sequence_slice(i, 0, None)

    def sequence_slice(self, i: int, start: int, stop: int | None) -> np.ndarray:
        """Part of file i's sequence as int32 (copies only that part out of a memory-mapped file)."""
        begin, end = int(self.offsets[i]), int(self.offsets[i + 1])
        stop = end if stop is None else min(begin + stop, end)
        return np.asarray(self.tokens[begin + start : stop], dtype=np.int32)

    def block_tokens(self, block_key_id: int) -> np.ndarray:
        """BSM: instruction token ids (into `instruction_lexicon`) of one block key."""
        if self.block_flat is None:
            raise DatasetError("block_tokens is only defined for BSM datasets")
        off = self.block_offsets
        return np.asarray(self.block_flat[off[block_key_id] : off[block_key_id + 1]], dtype=np.int32)

    @property
    def window_defaults(self) -> dict:
        """Window settings chosen when the dataset was built (`dataset build --window ...`), or {}."""
        return dict(self.meta.get("window") or {})

    @property
    def max_tokens(self) -> int | None:
        """Sequences were cut after this many tokens or blocks (`dataset build --max-tokens`), or None."""
        return self.meta.get("max_tokens")

    @property
    def min_instructions(self) -> int | None:
        """Traces that executed fewer instructions were left out (`dataset build --min-instructions`)."""
        return self.meta.get("min_instructions")

    def describe(self) -> dict:
        labels = self.labels()
        return {
            "representation": self.representation,
            "normalisation": self.normalisation,
            "api": self.api,
            "api_args": self.api_args,
            "files": len(self),
            "malicious": int((labels == 1).sum()),
            "benign": int((labels == 0).sum()),
            "lexicon": len(self.lexicon),
            "instruction_lexicon": len(self.instruction_lexicon),
            "sequence_items": int(self.offsets[-1]),
            "median_length": float(np.median(self.lengths())) if len(self) else 0.0,
        }

    # --- storage -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        # A dataset saved over an older one: until the new dataset.json is written, none is there.
        (out / "dataset.json").unlink(missing_ok=True)
        np.save(out / "tokens.npy", np.ascontiguousarray(self.tokens), allow_pickle=False)
        np.save(out / "offsets.npy", self.offsets, allow_pickle=False)
        if self.representation == BSM:
            np.save(out / "block_tokens.npy", np.ascontiguousarray(self.block_flat), allow_pickle=False)
            np.save(out / "block_offsets.npy", self.block_offsets, allow_pickle=False)
        _write_tables(
            out,
            self.files,
            self.lexicon,
            self.instruction_lexicon if self.representation == BSM else None,
            {
                "representation": self.representation,
                "normalisation": self.normalisation,
                "api": self.api,
                "api_args": self.api_args,
                "meta": self.meta,
            },
        )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> SequenceDataset:
        root = Path(path)
        try:
            header = json.loads((root / "dataset.json").read_text())
        except FileNotFoundError:
            raise DatasetError(f"{root}: not a runtrace dataset (no dataset.json)") from None
        except OSError as e:  # a file named as the folder, a folder without read permission, ...
            raise DatasetError(f"{root}: not a runtrace dataset ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{root}/dataset.json: {e}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise DatasetError(f"{root}: not a runtrace dataset (dataset.json names another format)")
        if header.get("version") != FORMAT_VERSION:
            raise DatasetError(
                f"{root}: unsupported dataset format {header.get('format')} v{header.get('version')}"
            )
        mode = "r" if mmap else None

        def array(name: str) -> np.ndarray:
            return np.load(root / name, mmap_mode=mode, allow_pickle=False)

        def strings(name: str) -> list[str]:
            return pq.read_table(root / name).column("token").to_pylist()

        representation = header["representation"]
        extra = {}
        if representation == BSM:
            extra = {
                "instruction_lexicon": strings("instruction_lexicon.parquet"),
                "block_tokens": array("block_tokens.npy"),
                "block_offsets": np.load(root / "block_offsets.npy", allow_pickle=False),
            }
        try:
            return cls(
                representation,
                pq.read_table(root / "files.parquet"),
                strings("lexicon.parquet"),
                array("tokens.npy"),
                np.load(root / "offsets.npy", allow_pickle=False),
                normalisation=header["normalisation"],
                api=header["api"],
                api_args=header.get("api_args", False),  # datasets from before the option: without
                meta=header.get("meta") or {},
                **extra,
            )
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"{root}: unreadable dataset ({e})") from None


def _write_tables(
    out: Path, files: pa.Table, lexicon: Sequence[str], instruction_lexicon, header: dict
) -> None:
    """The file table, the lexicons and, last, dataset.json: a directory without it is an interrupted
    write, not a dataset."""
    pq.write_table(files, out / "files.parquet")
    pq.write_table(pa.table({"token": pa.array(list(lexicon), pa.string())}), out / "lexicon.parquet")
    if instruction_lexicon is not None:
        pq.write_table(
            pa.table({"token": pa.array(list(instruction_lexicon), pa.string())}),
            out / "instruction_lexicon.parquet",
        )
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **header}
    (out / "dataset.json").write_text(json.dumps(header, indent=1, sort_keys=True))


# --- building ---------------------------------------------------------------------------------------


def _encode_one(
    item, representation: str, normalisation: str, api: bool, api_args: bool, max_tokens: int | None
):
    """Worker body (module level so process pools can pickle it): trace or path -> (row, encoding)."""
    trace = item if isinstance(item, Trace) else load_any(Path(item))
    encoded = encode_trace(
        trace, representation, normalisation, api=api, api_args=api_args, max_tokens=max_tokens
    )
    row = {
        "sha256": trace.meta.sha256,
        "arch": str(trace.meta.arch),
        "n_instructions": trace.instruction_count,
        "stop_reason": str(trace.meta.stop_reason),
        "source": trace.meta.source,
        "tracer_version": trace.meta.tracer_version or None,
    }
    return row, encoded


def _compact_dtype(vocabulary_size: int):
    # Most lexicons fit 16 bits: half the disk and memory for the biggest array.
    return np.uint16 if vocabulary_size <= 1 << 16 else np.int32


class _Spool:
    """Id sequences appended to a scratch file as they come, so that a build holds one trace at a time
    however many there are (an ISM dataset of a whole corpus is gigabytes). `finish` copies them, a chunk
    at a time, into the dataset's .npy in its final dtype, which is known only once every trace has added
    to the lexicon."""

    CHUNK = 1 << 24  # ids copied at a time by `finish` (64 MiB of int32)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by finish
        self.lengths = array("q")

    def append(self, ids: np.ndarray) -> None:
        self._fh.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        self.lengths.append(len(ids))

    def offsets(self) -> np.ndarray:
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self.lengths, dtype=np.int64), out=offsets[1:])
        return offsets

    def finish(self, out: Path, vocabulary_size: int) -> None:
        # Plain reads and writes, not memory maps: the pages of a mapped file count in the process's
        # resident size while it runs, so mapping both files would grow it with the dataset.
        self._fh.close()
        total = int(sum(self.lengths))
        dtype = np.dtype(_compact_dtype(vocabulary_size))
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (total,)}
        with open(self.path, "rb") as src, open(out, "wb") as dst:
            np.lib.format.write_array_header_1_0(dst, header)
            for _ in range(0, total, self.CHUNK):
                chunk = np.fromfile(src, dtype=np.int32, count=self.CHUNK)
                dst.write(chunk.astype(dtype, copy=False).tobytes())
        self.path.unlink()

    def discard(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class _Merger:
    """Folds per-trace local lexicons into the dataset's global ones; BSM block contents go to a spool as
    each new block key is met."""

    def __init__(self, block_spool: _Spool | None) -> None:
        self.index: dict[str, int] = {}
        self.insn_index: dict[str, int] = {}
        self.block_spool = block_spool

    def add(self, enc: EncodedTrace) -> np.ndarray:
        mapping = np.empty(len(enc.lexicon), dtype=np.int32)
        for local, token in enumerate(enc.lexicon):
            gid = self.index.get(token)
            if gid is None:
                gid = self.index[token] = len(self.index)
                if self.block_spool is not None:
                    content = enc.block_contents[local]
                    ids = (self.insn_index.setdefault(t, len(self.insn_index)) for t in content)
                    self.block_spool.append(np.fromiter(ids, dtype=np.int32, count=len(content)))
            mapping[local] = gid
        return mapping[enc.sequence] if len(enc.sequence) else np.zeros(0, dtype=np.int32)


def _label_value(label: int | str) -> int:
    if isinstance(label, str):
        if label.lower() not in LABELS:
            raise DatasetError(f"label must be one of {', '.join(LABELS)} (or 0/1), not {label!r}")
        return LABELS[label.lower()]
    if int(label) not in (0, 1):
        raise DatasetError(f"label must be 0 or 1, not {label!r}")
    return int(label)


def build_dataset(
    traces: Sequence[Trace | str | os.PathLike],
    labels: Sequence[int | str],
    *,
    representation: str = ISM,
    normalisation: Normalisation | str = Normalisation.REGISTERS,
    api: bool = True,
    api_args: bool = False,
    groups: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    max_tokens: int | None = None,
    jobs: int = 1,
    on_error: str = "raise",
    window: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    min_instructions: int = 0,
    out: str | os.PathLike | None = None,
    meta: dict | None = None,
) -> SequenceDataset:
    """Encode traces (objects, or paths to trace files) into a dataset.

    labels: 1/0 or "malicious"/"benign" per trace.  api: API calls as tokens after the block that made
    them; api_args: each followed by its arguments' class tokens (`runtrace.represent.apiargs`; needs
    api; off, as in the paper's ISM and BSM).  groups: origin group per trace (malware family,
    benign package), used by grouped evaluation; defaults to the file's own sha256.  max_tokens: keep
    only the first N tokens (ISM) or blocks (BSM) of each trace.  jobs > 1 encodes in worker
    processes.  on_error="skip" leaves out traces that fail to load (listed in `meta["skipped"]`).
    window: default window settings for models trained on this dataset (see `WindowConfig`).
    progress: called as progress(done, total) after each trace.
    min_instructions: leave out traces that executed fewer instructions (listed in `meta["short"]`), so
    that how far emulation got cannot stand in for the label (see docs/corpus.md).
    out: write the dataset into this directory and return it memory-mapped; memory then stays flat
    however many traces there are. The build goes to `<out>.partial` and replaces `out` only when done,
    so an interrupted or failed build leaves an earlier dataset there as it was. Without `out` the
    dataset is returned in memory.  meta: more entries for the dataset's meta.
    """
    if representation not in REPRESENTATIONS:
        raise DatasetError(
            f"representation must be one of {', '.join(REPRESENTATIONS)}, not {representation!r}"
        )
    normalisation = Normalisation(normalisation)
    if api_args and not api:
        raise DatasetError("argument tokens (api_args) follow API tokens: they need api")
    n = len(traces)
    for name, values in (("labels", labels), ("groups", groups), ("kinds", kinds)):
        if values is not None and len(values) != n:
            raise DatasetError(f"{name} has {len(values)} entries for {n} traces")
    label_values = [_label_value(v) for v in labels]
    settings = dict(
        representation=representation, normalisation=str(normalisation), api=api, api_args=api_args,
        max_tokens=max_tokens, jobs=jobs, on_error=on_error, progress=progress,
        min_instructions=min_instructions,
    )  # fmt: skip
    extra_meta = {**({"window": dict(window)} if window else {}), **(meta or {})}

    if out is None:
        with tempfile.TemporaryDirectory(prefix="runtrace-dataset-") as tmp:
            _encode_into(Path(tmp), traces, label_values, groups, kinds, extra_meta, **settings)
            return SequenceDataset.load(tmp, mmap=False)
    final = Path(out)
    partial = final.with_name(final.name + ".partial")
    for folder in (final, partial):
        _check_replaceable(folder)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        n_files, written = _encode_into(partial, traces, label_values, groups, kinds, extra_meta, **settings)
        if n_files == 0:
            raise DatasetError(
                f"no trace could be used ({len(written['skipped'])} unreadable, {len(written['short'])} "
                f"under {min_instructions} instructions); {final} is unchanged"
            )
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():
        # The old dataset stops being one first (no dataset.json), then goes.
        (final / "dataset.json").unlink(missing_ok=True)
        shutil.rmtree(final)
    partial.rename(final)
    return SequenceDataset.load(final)


# What a dataset folder, or one whose build was interrupted, can hold (`save`, `_encode_into`).
_DATASET_FILES = frozenset(
    {
        "dataset.json", "files.parquet", "lexicon.parquet", "tokens.npy", "offsets.npy",
        "instruction_lexicon.parquet", "block_tokens.npy", "block_offsets.npy",
        "tokens.spool", "block_tokens.spool",
    }
)  # fmt: skip


def _check_replaceable(folder: Path) -> None:
    """A build replaces `folder` whole: refuse unless it is absent, empty, or holds a dataset's files only
    (a mistyped OUT must not cost anyone the files in it)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder")
    others = sorted(p.name for p in folder.iterdir() if p.name not in _DATASET_FILES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise DatasetError(f"{folder}: holds files that are not a dataset's ({shown}); choose a new folder")


def _encode_into(
    folder: Path,
    traces,
    label_values: list[int],
    groups,
    kinds,
    extra_meta: dict,
    *,
    representation: str,
    normalisation: str,
    api: bool,
    api_args: bool,
    max_tokens: int | None,
    jobs: int,
    on_error: str,
    progress,
    min_instructions: int,
) -> tuple[int, dict]:
    """Encodes every trace and writes the dataset's files into `folder`; returns how many files it has and
    the meta it wrote."""
    n = len(traces)
    args = (representation, normalisation, api, api_args, max_tokens)
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and n > 1 else None

    def outcomes():
        """(result, None) or (None, error) per trace, in order: one bad trace must not end the others."""
        futures = [pool.submit(_encode_one, t, *args) for t in traces] if pool else None
        for i in range(n):
            try:
                yield (futures[i].result() if futures else _encode_one(traces[i], *args)), None
            except Exception as e:  # noqa: BLE001 - any loader failure is reported per trace
                yield None, e

    tokens = _Spool(folder / "tokens.spool")
    blocks = _Spool(folder / "block_tokens.spool") if representation == BSM else None
    merger = _Merger(blocks)
    rows, skipped, short = [], [], []
    try:
        for i, (result, error) in enumerate(outcomes()):
            if progress is not None:
                progress(i + 1, n)
            if error is not None:
                if on_error != "skip":
                    raise DatasetError(f"{traces[i]}: {error}") from error
                skipped.append({"trace": str(traces[i]), "error": f"{type(error).__name__}: {error}"})
                continue
            row, encoded = result
            if row["n_instructions"] < min_instructions:
                short.append({"trace": str(traces[i]), "instructions": int(row["n_instructions"])})
                continue
            tokens.append(merger.add(encoded))
            row.update(
                label=label_values[i],
                group=str(groups[i]) if groups is not None else row["sha256"],
                kind=str(kinds[i]) if kinds is not None else "",
                n_tokens=len(encoded.sequence),
                n_api_calls=encoded.n_api_calls,
            )
            rows.append(row)
    except BaseException:
        for spool in (tokens, blocks):
            if spool is not None:
                spool.discard()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    np.save(folder / "offsets.npy", tokens.offsets(), allow_pickle=False)
    tokens.finish(folder / "tokens.npy", len(merger.index))
    if blocks is not None:
        np.save(folder / "block_offsets.npy", blocks.offsets(), allow_pickle=False)
        blocks.finish(folder / "block_tokens.npy", len(merger.insn_index))
    files = pa.Table.from_pylist(rows, schema=FILE_SCHEMA) if rows else FILE_SCHEMA.empty_table()
    meta = {
        "max_tokens": max_tokens,
        "skipped": skipped,
        "min_instructions": min_instructions,
        "short": short,
        **extra_meta,
    }
    header = {
        "representation": representation,
        "normalisation": normalisation,
        "api": api,
        "api_args": api_args,
        "meta": meta,
    }
    insn_lexicon = list(merger.insn_index) if representation == BSM else None
    _write_tables(folder, files, list(merger.index), insn_lexicon, header)
    return len(rows), meta

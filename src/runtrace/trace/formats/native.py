"""runtrace's native trace file (`.rtrace`), version 2 (version 1 files are read too).

A ZIP archive in numpy's `.npz` layout (deflate-compressed `.npy` members — stored uncompressed in the
temporary traces `scan` reads once — readable by any numpy with `allow_pickle=False`; nothing in the file
can execute code when loaded):

| member          | dtype  | content                                                          |
| --------------- | ------ | ---------------------------------------------------------------- |
| `header`        | uint8  | UTF-8 JSON: format name, version, metadata, API names            |
| `block_address` | uint64 | start address of each distinct block (block id = index)          |
| `block_offset`  | uint64 | n_blocks+1 offsets into `block_bytes`                            |
| `block_bytes`   | uint8  | the blocks' raw bytes, concatenated                              |
| `insn_offset`   | uint64 | n_blocks+1 offsets into `insn_length`                            |
| `insn_length`   | uint8  | byte length of every instruction of every block, concatenated    |
| `visits`        | uint32 | block id of every executed block, in order                       |
| `threads`       | uint32 | thread id per visit (only in multi-threaded traces)              |
| `api_position`  | uint32 | visit index after which each API call happened                   |
| `api_return`    | uint64 | return address of each API call                                  |
| `api_name`      | uint32 | index into the header's `api_names`                              |
| `api_supported` | bool   | False where the emulator had no handler and stubbed the call     |
| `api_result`    | uint64 | each call's return value (version 2)                             |
| `api_has_result`| bool   | False where the return value is unknown (version 2)              |
| `api_args`      | uint8  | UTF-8 JSON: each call's arguments, integers and strings (version 2) |

The header holds `format` ("runtrace-trace"), `version` (2), `meta` (sha256, arch, source, stop reason
and detail, wall time, tracer version, settings, entry points, events, behaviour), `api_names`, and — only for
traces imported from text logs, whose blocks have no bytes — `block_texts`: per block, the list of its
instructions' disassembly.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.trace.errors import TraceReadError
from runtrace.trace.formats.registry import TraceFormat, register
from runtrace.trace.model import ApiCall, Arch, BasicBlock, EntryPoint, StopReason, Trace, TraceMeta

FORMAT_NAME = "runtrace-trace"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no API arguments, results or behaviour
SUFFIX = ".rtrace"
ZIP_MAGIC = b"PK\x03\x04"
TRACE_MEMBERS = {"header.npy", "visits.npy"}  # enough to tell a runtrace trace from any other zip


class TraceFormatError(TraceReadError):
    """A file that is not a readable runtrace trace."""


def meta_to_json(meta: TraceMeta) -> dict:
    return {
        "sha256": meta.sha256,
        "arch": meta.arch.value,
        "source": meta.source,
        "stop_reason": meta.stop_reason.value,
        "stop_detail": meta.stop_detail,
        "wall_time_s": meta.wall_time_s,
        "tracer_version": meta.tracer_version,
        "settings": meta.settings,
        "file_name": meta.file_name,
        "image_base": meta.image_base,
        "entry_points": [[e.kind, e.name, e.address, e.first_visit] for e in meta.entry_points],
        "events": meta.events,
        "behaviour": meta.behaviour,
    }


def _meta_from_json(d: dict) -> TraceMeta:
    return TraceMeta(
        sha256=d["sha256"],
        arch=Arch(d["arch"]),
        source=d["source"],
        stop_reason=StopReason(d["stop_reason"]),
        stop_detail=d.get("stop_detail", ""),
        wall_time_s=float(d.get("wall_time_s", 0.0)),
        tracer_version=d.get("tracer_version", ""),
        settings=d.get("settings", {}),
        file_name=d.get("file_name", ""),
        image_base=int(d.get("image_base", 0)),
        entry_points=[EntryPoint(k, n, int(a), int(f)) for k, n, a, f in d.get("entry_points", [])],
        events=d.get("events", []),
        behaviour=d.get("behaviour", {}),
    )


def save_trace(trace: Trace, path: str | Path, compress: bool = True) -> Path:
    """Write atomically (temporary file, then rename) so an interrupted batch leaves no half file.

    `compress=False` stores the members uncompressed (still an `.npz` every reader reads): for a trace
    read once and deleted, as `scan`'s are, deflating it in the tracer and inflating it again cost 5 to
    20 ms of CPU per file (measured), for a file a few MB larger for a moment."""
    path = Path(path)
    names = sorted({c.name for c in trace.api_calls})
    name_id = {n: i for i, n in enumerate(names)}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "meta": meta_to_json(trace.meta),
        "api_names": names,
    }
    blocks = trace.blocks
    if any(b.texts for b in blocks):
        header["block_texts"] = [list(b.texts) for b in blocks]
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "block_address": np.array([b.address for b in blocks], dtype=np.uint64),
        "block_offset": np.concatenate([[0], np.cumsum([b.size for b in blocks], dtype=np.uint64)]).astype(
            np.uint64
        ),
        "block_bytes": np.frombuffer(b"".join(b.data for b in blocks), dtype=np.uint8),
        "insn_offset": np.concatenate(
            [[0], np.cumsum([b.instruction_count for b in blocks], dtype=np.uint64)]
        ).astype(np.uint64),
        "insn_length": np.array([n for b in blocks for n in b.insn_lengths], dtype=np.uint8),
        "visits": trace.visits,
        "api_position": np.array([c.position for c in trace.api_calls], dtype=np.uint32),
        "api_return": np.array([c.return_address for c in trace.api_calls], dtype=np.uint64),
        "api_name": np.array([name_id[c.name] for c in trace.api_calls], dtype=np.uint32),
        "api_supported": np.array([c.supported for c in trace.api_calls], dtype=bool),
        "api_result": np.array([c.result or 0 for c in trace.api_calls], dtype=np.uint64),
        "api_has_result": np.array([c.result is not None for c in trace.api_calls], dtype=bool),
        "api_args": np.frombuffer(
            json.dumps([list(c.args) for c in trace.api_calls]).encode(), dtype=np.uint8
        ),
    }
    if trace.threads is not None:
        arrays["threads"] = trace.threads
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)
    tmp.replace(path)
    return path


def _open(path: Path):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read: {e.strerror}") from None
    if magic != ZIP_MAGIC:
        raise TraceFormatError(f"{path}: not a runtrace trace (no .rtrace/npz container)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise TraceFormatError(f"{path}: not a runtrace trace ({e})") from None


def _header(npz, path: Path) -> dict:
    try:
        header = json.loads(bytes(npz["header"]).decode())
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise TraceFormatError(f"{path}: unreadable trace header ({e})") from None
    if header.get("format") != FORMAT_NAME:
        raise TraceFormatError(f"{path}: not a runtrace trace (format {header.get('format')!r})")
    if header.get("version") not in READABLE_VERSIONS:
        raise TraceFormatError(f"{path}: trace format version {header.get('version')} is not supported")
    return header


def read_trace_meta(path: str | Path) -> TraceMeta:
    """Only the header: cheap, used to decide whether an existing trace can be reused."""
    path = Path(path)
    with _open(path) as npz:
        return _meta_from_json(_header(npz, path)["meta"])


@dataclass(frozen=True)
class TraceSummary:
    """A trace's metadata and sizes, without its blocks and API calls."""

    meta: TraceMeta
    instruction_count: int
    block_count: int
    visit_count: int
    api_call_count: int

    @classmethod
    def of(cls, trace: Trace) -> TraceSummary:
        counts = trace.instruction_count, len(trace.blocks), trace.visit_count, len(trace.api_calls)
        return cls(trace.meta, *counts)


def read_trace_summary(path: str | Path) -> TraceSummary:
    """The header and the counts `Trace` would give (instructions executed, distinct blocks, visits, API
    calls), read from the instruction lengths and the visits alone: a resumed batch reports every trace it
    reuses, and building each one's blocks and calls (its API arguments are JSON) made a rerun of
    `corpus trace` over 6,574 reused traces take 306 s (15 s now).  TraceFormatError where `load_trace`
    raises it."""
    path = Path(path)
    with _open(path) as npz:
        header = _header(npz, path)
        try:
            n_blocks = len(npz["block_address"])
            per_block = np.diff(npz["insn_offset"].astype(np.int64))
            visits = npz["visits"]
            n_calls = len(npz["api_position"])
            meta = _meta_from_json(header["meta"])
        except (KeyError, IndexError, ValueError, zipfile.BadZipFile, OSError) as e:
            raise TraceFormatError(f"{path}: damaged trace ({e})") from None
    if len(per_block) != n_blocks:
        raise TraceFormatError(
            f"{path}: damaged trace (instruction offsets for {len(per_block)} of {n_blocks} blocks)"
        )
    if len(visits) and int(visits.max()) >= n_blocks:
        raise TraceFormatError(f"{path}: damaged trace (visit refers to block past the dictionary)")
    instructions = int(per_block[visits].sum()) if len(visits) else 0
    return TraceSummary(meta, instructions, n_blocks, len(visits), n_calls)


def load_trace(path: str | Path) -> Trace:
    path = Path(path)
    with _open(path) as npz:
        header = _header(npz, path)
        try:
            addr = npz["block_address"].tolist()
            boff = npz["block_offset"].tolist()
            raw = npz["block_bytes"].tobytes()
            ioff = npz["insn_offset"].tolist()
            ilen = npz["insn_length"].tolist()
            visits = npz["visits"]
            threads = npz["threads"] if "threads" in npz.files else None
            api = zip(
                npz["api_position"].tolist(),
                npz["api_return"].tolist(),
                npz["api_name"].tolist(),
                npz["api_supported"].tolist(),
                strict=True,
            )
            names = header["api_names"]
            texts = header.get("block_texts") or [()] * len(addr)
            blocks = [
                BasicBlock(a, raw[boff[i] : boff[i + 1]], tuple(ilen[ioff[i] : ioff[i + 1]]), tuple(texts[i]))
                for i, a in enumerate(addr)
            ]
            calls = [ApiCall(p, names[n], r, bool(s)) for p, r, n, s in api]
            if "api_args" in npz.files:
                args = json.loads(npz["api_args"].tobytes().decode())
                results = npz["api_result"].tolist()
                known = npz["api_has_result"].tolist()
                calls = [
                    ApiCall(c.position, c.name, c.return_address, c.supported, tuple(a), v if k else None)
                    for c, a, v, k in zip(calls, args, results, known, strict=True)
                ]
            meta = _meta_from_json(header["meta"])
        except (KeyError, IndexError, ValueError, zipfile.BadZipFile, OSError) as e:
            raise TraceFormatError(f"{path}: damaged trace ({e})") from None
    if len(visits) and int(visits.max()) >= len(blocks):
        raise TraceFormatError(f"{path}: damaged trace (visit refers to block past the dictionary)")
    return Trace(meta=meta, blocks=blocks, visits=visits, api_calls=calls, threads=threads)


def _is_native(path: Path, head: bytes) -> bool:
    if head != ZIP_MAGIC:
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) >= TRACE_MEMBERS
    except zipfile.BadZipFile:
        return False


register(
    TraceFormat(
        "native",
        read=lambda path, allow_truncated: load_trace(path),
        write=save_trace,
        suffixes=(SUFFIX,),
        probe=_is_native,
        keeps_api_calls=True,
    )
)

"""Tracing many samples: one child process per sample, a pool of workers, resumable, with a summary.

Each sample is emulated in a forked child (`forked.ForkedChild`: a plain fork, so that it works in a
daemonic process too, such as a default Dask worker) so that a hang, a crash inside the emulator or a memory
blow-up costs that sample only: the parent watches wall time and the child's own memory, kills the child
when a limit is passed, and records an error for the sample.  The parent holds only sample descriptors;
the child reads the bytes itself (`trace_one`), so the parent's memory stays flat however large the
input.  Finished traces are written atomically, so an interrupted batch resumes by skipping samples whose
trace (for the same settings) already exists; Ctrl-C stops the children and raises `BatchInterrupted`
with what finished.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from runtrace.trace.emulate import recorder
from runtrace.trace.emulate.emulator import EmulationError, emulate
from runtrace.trace.emulate.forked import ForkedChild, result_pipe, wait
from runtrace.trace.emulate.inputs import InputProblem, Sample, SampleReadError
from runtrace.trace.emulate.pe import UnsupportedInput, inspect_pe
from runtrace.trace.formats.native import (
    SUFFIX,
    TraceFormatError,
    TraceSummary,
    load_trace,
    read_trace_meta,
    read_trace_summary,
    save_trace,
)
from runtrace.trace.settings import TracerSettings

HARD_TIMEOUT_GRACE_S = 15.0  # the in-process watchdog stops emulation first; this catches real hangs
_POLL_S = 0.02  # how often running children's time and memory are checked
_HEAD = 4096  # enough of a file to tell a PE from anything else without reading the rest


@dataclass
class TraceOutcome:
    sha256: str
    name: str
    status: str  # "ok", "skipped" (already traced with these settings), "error"
    path: str = ""
    arch: str = ""
    instruction_count: int = 0
    block_count: int = 0
    visit_count: int = 0
    api_call_count: int = 0
    stop_reason: str = ""
    stop_detail: str = ""
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0  # the tracer child's high-water mark of resident memory
    error: str = ""


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: the running children were stopped; `outcomes` holds what finished."""

    def __init__(self, outcomes: list[TraceOutcome], unfinished: int) -> None:
        super().__init__(f"interrupted with {unfinished} samples unfinished")
        self.outcomes = outcomes
        self.unfinished = unfinished


def trace_path(out_dir: Path, sha256: str) -> Path:
    return out_dir / f"{sha256}{SUFFIX}"


def _error_path(out_dir: Path, sha256: str) -> Path:
    return out_dir / f"{sha256}.error.json"


def _outcome_of(summary: TraceSummary, sample_name: str, path: Path) -> TraceOutcome:
    m = summary.meta
    return TraceOutcome(
        sha256=m.sha256, name=sample_name, status="ok", path=str(path), arch=m.arch.value,
        instruction_count=summary.instruction_count, block_count=summary.block_count,
        visit_count=summary.visit_count, api_call_count=summary.api_call_count,
        stop_reason=m.stop_reason.value, stop_detail=m.stop_detail, wall_time_s=m.wall_time_s,
    )  # fmt: skip


def _read_sample(sample: Sample) -> bytes:
    """The sample's bytes, checked against the hash it was listed under (it may have changed since)."""
    head = sample.read(_HEAD)
    if not head.startswith(b"MZ"):
        inspect_pe(head)  # raises UnsupportedInput naming what the file is; the rest is never read
    data = sample.read(sample.size + 1) if sample.size else sample.read()
    if hashlib.sha256(data).hexdigest() != sample.sha256:
        raise SampleReadError("changed on disk since the batch started (sha256 differs); not traced")
    problem = truncation(data)
    if problem:
        raise UnsupportedInput(problem)
    return data


def truncation(data: bytes) -> str | None:
    """Why a PE file is cut short, or None: its section table, or a section's raw data, ends past the end
    of the file.  Windows refuses to load such an image, and emulating it ran whatever the missing bytes
    left (a PE cut to 3,000 bytes ran a few instructions and was judged `unknown`).  Headers too broken
    to read are left to `inspect_pe`, which names what is wrong with them."""
    try:
        (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
        (n_sections,) = struct.unpack_from("<H", data, e_lfanew + 6)
        (opt_size,) = struct.unpack_from("<H", data, e_lfanew + 20)
    except struct.error:
        return None
    table = e_lfanew + 24 + opt_size
    size, end = len(data), table + 40 * n_sections
    if end > size:
        return (
            f"truncated PE: the section table ends at byte {end:,}, past the end of the file ({size:,} bytes)"
        )
    for k in range(n_sections):
        name, raw_size, raw_pointer = struct.unpack_from("<8s8xII", data, table + 40 * k)
        if raw_size and raw_pointer + raw_size > size:
            shown = name.rstrip(b"\0").decode("latin-1") or f"#{k + 1}"
            return (
                f"truncated PE: section {shown} needs bytes {raw_pointer:,} to {raw_pointer + raw_size:,}, "
                f"past the end of the file ({size:,} bytes)"
            )
    return None


def trace_one(
    sample: Sample, settings: TracerSettings, out_dir: Path, extra=None, compress: bool = True
) -> dict:
    """Read, emulate and save one sample; returns the outcome as a dict (an "error" key when it failed).

    The unit of work of a batch, run in a child process: it takes only a small picklable descriptor
    and reads the bytes itself, so it can run wherever the sample's path can be read.  `compress`:
    see `save_trace`.
    """
    try:
        data = _read_sample(sample)
        trace = emulate(data, sample.sha256, sample.name, settings)
        del data
        path = save_trace(trace, trace_path(out_dir, sample.sha256), compress=compress)
        if extra is not None:
            extra(trace, out_dir)
        outcome = _outcome_of(TraceSummary.of(trace), sample.name, path)
        outcome.peak_rss_mb = _status_mb(os.getpid(), "VmHWM:")
        return asdict(outcome)
    except (UnsupportedInput, EmulationError, SampleReadError) as e:
        return {"error": str(e)}
    except MemoryError:
        return {"error": "out of memory in the tracer", "stop_reason": "memory_limit"}
    except Exception as e:  # the emulator can fail in many ways; the batch must go on
        return {"error": f"tracer failed: {type(e).__name__}: {str(e)[:200]}"}


def _child_main(conn, sample: Sample, settings: TracerSettings, out_dir: Path, extra, compress: bool) -> None:
    # Every object the child inherits is frozen: its collections (emulation makes plenty of garbage)
    # then walk only what the child makes, never the parent's objects, whose pages they would touch and
    # so copy.  A parent that made objects since its own start-up was frozen (the service: requests,
    # results), or never froze it, made each child pay for walking them: the service's worker pool in a
    # process that froze nothing spent 11.6-12.5 s of tracer children's CPU on 100 scans without this,
    # 10.6-10.7 s with it (measured, 2 cores).  Frozen objects are never freed, which costs nothing in a
    # process that lives for one sample.
    gc.freeze()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides what happens to the
    # children (it stops them), so a child never dies half-way through writing with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(trace_one(sample, settings, out_dir, extra, compress))
    finally:
        conn.close()


def _private_mb(pid: int) -> float:
    """Memory the process holds for itself (USS: private pages, clean or dirty), in MiB.

    A forked child shares the parent's pages until it writes to them; resident size (RSS) counts those
    shared pages too, so a cap on RSS would charge each child for the parent's memory.
    """
    # Imported here: this is read only for a child already over the cap, and psutil's import is a
    # noticeable share of a one-file `runtrace scan` (about 15 ms).
    import psutil

    try:
        return psutil.Process(pid).memory_full_info().uss / (1024 * 1024)
    except (psutil.Error, OSError):
        return 0.0


def _over_cap(pid: int, memory_mb: int) -> bool:
    # Resident size bounds private memory from above and costs microseconds to read; counting private
    # pages walks the process's page tables (tens of ms for a process of a few GiB, measured), so it is
    # done only for a child whose resident size is over the cap.
    return _status_mb(pid) > memory_mb and _private_mb(pid) > memory_mb


def _status_mb(pid: int, field: str = "VmRSS:") -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reusable(
    out_dir: Path, sample: Sample, settings: TracerSettings, retry_errors: bool, extra_writer=None
) -> TraceOutcome | None:
    """The outcome of a sample traced before with these settings (or failed before), or None.  A reused
    trace gets the extra writer's file when it lacks one (`trace --format x64dbg` over a folder traced
    without it)."""
    path = trace_path(out_dir, sample.sha256)
    if path.exists():
        try:
            if read_trace_meta(path).settings == settings.key():
                if extra_writer is None:
                    summary = read_trace_summary(path)
                else:  # the writer needs the whole trace: its counts come with it
                    trace = load_trace(path)
                    extra_writer(trace, out_dir, replace=False)
                    summary = TraceSummary.of(trace)
                outcome = _outcome_of(summary, sample.name, path)
                outcome.status = "skipped"
                return outcome
        except TraceFormatError:
            return None
    err = _error_path(out_dir, sample.sha256)
    if not retry_errors and err.exists():
        try:
            record = json.loads(err.read_text())
        except (OSError, ValueError):
            return None
        if record.get("settings") == settings.key():
            return TraceOutcome(sample.sha256, sample.name, "error", error=record.get("error", ""),
                                stop_reason=record.get("stop_reason", ""))  # fmt: skip
    return None


def record_error(out_dir: Path, settings: TracerSettings, outcome: TraceOutcome) -> None:
    """A failed sample's error is kept beside the traces, so a resumed batch does not try it again."""
    if outcome.status == "error" and outcome.sha256:
        record = {"settings": settings.key(), "error": outcome.error, "stop_reason": outcome.stop_reason}
        _error_path(out_dir, outcome.sha256).write_text(json.dumps(record))


def trace_batch(
    inputs: Iterable[Sample | InputProblem],
    out_dir: Path,
    settings: TracerSettings | None = None,
    workers: int | None = None,
    on_done: Callable[[TraceOutcome], None] | None = None,
    retry_errors: bool = False,
    extra_writer: Callable | None = None,
    stop: Callable[[], bool] | None = None,
    compress: bool = True,
) -> list[TraceOutcome]:
    """Trace every sample into out_dir; returns one outcome per input, in completion order.

    `on_done` is called after each sample (progress bars); `extra_writer(trace, out_dir)` runs in the
    child after the native trace is saved (e.g. to also write an x64dbg file), and in this process as
    `extra_writer(trace, out_dir, replace=False)` for a trace reused from an earlier run.  `stop` is
    polled while children run: when it returns True the batch ends as Ctrl-C ends it (children killed,
    `BatchInterrupted`), which is how the scanning service stops a deleted scan.  `compress=False`
    stores the traces uncompressed, for a caller that reads each one once and deletes it (`scan`).
    """
    settings = settings or TracerSettings()
    workers = max(1, workers or os.cpu_count() or 1)
    # Before any child: a tracer that cannot start fails every sample alike, and those failures would be
    # remembered as the samples' own errors (and reused by every resumed run).
    recorder.require_built()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[TraceOutcome] = []
    seen: set[str] = set()
    pending: deque[Sample] = deque()

    def finish(outcome: TraceOutcome) -> None:
        outcomes.append(outcome)
        record_error(out_dir, settings, outcome)
        if on_done:
            on_done(outcome)

    running: dict = {}
    try:
        for item in inputs:
            if isinstance(item, InputProblem):
                # Not remembered as an error record: finding the problem again costs nothing, and a
                # later run (a higher --max-file-size, a file made readable) should try again.
                outcomes.append(TraceOutcome(item.sha256, item.name, "error", error=item.message))
                if on_done:
                    on_done(outcomes[-1])
            elif item.sha256 in seen:
                continue
            else:
                seen.add(item.sha256)
                reused = _reusable(out_dir, item, settings, retry_errors, extra_writer)
                if reused is not None:
                    outcomes.append(reused)
                    if on_done:
                        on_done(reused)
                else:
                    pending.append(item)
        _run(pending, running, workers, settings, out_dir, extra_writer, finish, stop, compress)
    except KeyboardInterrupt:
        unfinished = len(pending) + len(running)
        for proc in running:
            proc.kill()  # a half-written trace is never seen: traces are renamed into place when complete
        for proc, (sample, _, receiver) in running.items():
            proc.join()
            receiver.close()
            partial = trace_path(out_dir, sample.sha256)
            partial.with_name(partial.name + ".part").unlink(missing_ok=True)
        raise BatchInterrupted(outcomes, unfinished) from None
    return outcomes


def _run(
    pending: deque, running: dict, workers: int, settings, out_dir, extra_writer, finish, stop, compress
) -> None:
    hard_limit = settings.timeout_s + HARD_TIMEOUT_GRACE_S if settings.timeout_s > 0 else None
    while pending or running:
        if stop is not None and stop():
            raise KeyboardInterrupt
        while pending and len(running) < workers:
            sample = pending.popleft()
            receiver, sender = result_pipe()
            proc = ForkedChild(_child_main, (sender, sample, settings, out_dir, extra_writer, compress))
            proc.start()
            sender.close()
            running[proc] = (sample, time.monotonic(), receiver)
        # Woken as soon as a child sends its outcome or dies, else every _POLL_S to check the limits: a
        # plain sleep made every sample wait half a poll on average after its child had finished.
        wait([receiver for _, _, receiver in running.values()] + [proc.sentinel for proc in running], _POLL_S)
        for proc, (sample, started, receiver) in list(running.items()):
            outcome = _check_child(proc, sample, started, receiver, hard_limit, settings.memory_mb)
            if outcome is not None:
                receiver.close()
                del running[proc]
                finish(outcome)


def _check_child(
    proc, sample: Sample, started: float, receiver, hard_limit, memory_mb
) -> TraceOutcome | None:
    def error(msg: str, reason: str = "") -> TraceOutcome:
        return TraceOutcome(sample.sha256, sample.name, "error", error=msg, stop_reason=reason)

    if receiver.poll():
        try:
            result = receiver.recv()
        except (EOFError, OSError):
            result = None
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        if result is None:
            return error(f"tracer process died (exit code {proc.exitcode})", "crashed")
        if result.get("status") != "ok":
            return error(result.get("error") or "tracer failed", result.get("stop_reason", ""))
        return TraceOutcome(**result)
    if not proc.is_alive():
        proc.join()
        return error(f"tracer process died (exit code {proc.exitcode})", "crashed")
    elapsed = time.monotonic() - started
    if hard_limit is not None and elapsed > hard_limit:
        proc.kill()
        proc.join()
        return error(f"no result after {elapsed:.0f} s: tracer process killed", "timeout")
    if memory_mb and _over_cap(proc.pid, memory_mb):
        proc.kill()
        proc.join()
        return error(
            f"tracer process passed the memory cap of {memory_mb} MiB and was killed", "memory_limit"
        )
    return None


def save_summary(out_dir: Path, outcomes: list[TraceOutcome], unfinished: int | None = None) -> dict:
    """`summary.json` of a batch in out_dir (with the count of samples left when it was interrupted)."""
    summary = summarize(outcomes)
    if unfinished is not None:
        summary["interrupted"] = {"unfinished": unfinished}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarize(outcomes: list[TraceOutcome]) -> dict:
    status = Counter(o.status for o in outcomes)
    reasons = Counter(o.stop_reason or "-" for o in outcomes if o.status in ("ok", "skipped"))
    return {
        "samples": len(outcomes),
        "by_status": dict(status),
        "by_stop_reason": dict(reasons),
        "errors": Counter(o.error for o in outcomes if o.status == "error").most_common(20),
        "outcomes": [asdict(o) for o in outcomes],
    }

"""Tracing many samples on a Dask distributed cluster: the local batch's results, other machines' cores.

The client (this process) does what the local batch does around the emulation - skips samples already
traced with the same settings, reads each sample's bytes (from a file or an archive, in memory), writes
the traces and error records into the output folder - so outputs and resumability are the same.  Each
cluster task gets one sample's bytes and runs the local batch for that one sample in a temporary folder
on its worker: the same forked tracer child under the same time and memory caps.  The trace files come
back with the result, so workers need no shared file system and never keep a sample.

Tasks are submitted a few per worker thread at a time rather than all at once, so a corpus of hundreds
of thousands of samples is never held in the client's or the scheduler's memory.

A worker started by `dask worker` with its defaults is a daemonic process, which multiprocessing will
not let start a child; the tracer's child is a plain fork (`forked.py`), so such workers trace too.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from runtrace.trace.emulate.batch import BatchInterrupted, TraceOutcome, _reusable, record_error, trace_batch
from runtrace.trace.emulate.inputs import InputProblem, Sample
from runtrace.trace.settings import TracerSettings

TASKS_PER_THREAD = 2
CONNECT_TIMEOUT = "20s"


class DaskUnavailable(ConnectionError):
    """No cluster at the address, or Dask is not installed (one line).  An OSError, as the loss of any
    other resource a whole run needs."""


def _trace_on_worker(
    data: bytes, sha256: str, name: str, settings: TracerSettings, extra_writer
) -> tuple[dict, dict[str, bytes]]:
    """Runs on a Dask worker: one sample through the local batch; the outcome and the files it wrote."""
    with tempfile.TemporaryDirectory(prefix="runtrace-dask-") as tmp:
        # The local batch's child reads a sample from a path: the bytes go to the worker's private
        # temporary folder (removed with it), apart from the outputs collected below.
        sample_path = Path(tmp) / "sample" / sha256
        sample_path.parent.mkdir()
        sample_path.write_bytes(data)
        sample = Sample(sha256, name, str(sample_path), size=len(data))
        del data
        (outcome,) = trace_batch(
            [sample], Path(tmp), settings, 1, retry_errors=True, extra_writer=extra_writer
        )
        files = {
            p.name: p.read_bytes()
            for p in Path(tmp).iterdir()
            if p.is_file() and not p.name.endswith(".json")
        }
    return asdict(outcome), files


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def trace_batch_dask(
    inputs: Iterable[Sample | InputProblem],
    out_dir: Path,
    address: str,
    settings: TracerSettings | None = None,
    on_done: Callable[[TraceOutcome], None] | None = None,
    retry_errors: bool = False,
    extra_writer: Callable | None = None,
) -> list[TraceOutcome]:
    """As `trace_batch`, with the emulation on the Dask cluster at `address` (e.g. tcp://host:8786)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise DaskUnavailable("--dask needs Dask distributed: pip install 'runtrace[serve]'") from None
    settings = settings or TracerSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[TraceOutcome] = []

    def finish(outcome: TraceOutcome) -> None:
        outcomes.append(outcome)
        record_error(out_dir, settings, outcome)
        if on_done:
            on_done(outcome)

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise DaskUnavailable(f"no Dask scheduler at {address}: {e}") from None
    todo = deque(_to_trace(inputs, out_dir, settings, retry_errors, finish, extra_writer))
    names: dict = {}
    try:
        with client:  # closing the client on Ctrl-C releases its futures: the cluster drops the tasks
            threads = sum(client.nthreads().values()) or 1
            queue = as_completed()
            while todo:
                sample = todo.popleft()
                try:
                    data = sample.read()
                except OSError as e:
                    finish(TraceOutcome(sample.sha256, sample.name, "error", error=f"cannot read: {e}"))
                    continue
                future = client.submit(
                    _trace_on_worker, data, sample.sha256, sample.name, settings, extra_writer, pure=False
                )
                names[future] = sample
                queue.add(future)
                while queue.count() >= threads * TASKS_PER_THREAD:
                    _collect(next(queue), names.pop, out_dir, finish)
            for future in queue:
                _collect(future, names.pop, out_dir, finish)
    except KeyboardInterrupt:
        raise BatchInterrupted(outcomes, len(todo) + len(names)) from None
    return outcomes


def _to_trace(inputs, out_dir: Path, settings: TracerSettings, retry_errors: bool, finish, extra_writer=None):
    """The samples that still need tracing; problems and samples traced before are reported at once."""
    seen: set[str] = set()
    for item in inputs:
        if isinstance(item, InputProblem):
            finish(TraceOutcome("", item.name, "error", error=item.message))
        elif item.sha256 not in seen:
            seen.add(item.sha256)
            reused = _reusable(out_dir, item, settings, retry_errors, extra_writer)
            if reused is None:
                yield item
            else:
                finish(reused)


def _collect(future, take_sample, out_dir: Path, finish) -> None:
    sample = take_sample(future)
    try:
        record, files = future.result()
    except Exception as e:  # a worker lost with the task (KilledWorker), a cancelled future: this sample only
        finish(
            TraceOutcome(
                sample.sha256, sample.name, "error", error=f"Dask task failed: {type(e).__name__}: {e}"
            )
        )
        return
    future.release()
    for name, data in files.items():
        _write_atomically(out_dir / name, data)
    outcome = TraceOutcome(**record)
    if outcome.path:
        outcome.path = str(out_dir / Path(outcome.path).name)
    finish(outcome)

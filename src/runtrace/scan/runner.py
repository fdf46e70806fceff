"""Running a batch of inputs to one result each: PE samples traced in child processes, trace files read.

`Scanner` (a verdict per input) and `NeighbourFinder` (the nearest known programs per input) share this:
PE samples are emulated with `runtrace.trace.emulate.batch.trace_batch` into a temporary directory, one
forked child per sample with the tracer's time and memory limits, exactly as `runtrace trace` does, so a
sample that hangs or crashes the emulator costs only its own result; each trace is analysed in the parent
as soon as its child finishes.  Existing trace files are read in the parent (reading executes nothing).
Every problem with one input becomes that input's error result, in one line; the batch goes on.

A runner has `options` (`RunOptions`: workers, tracer, dask, keep_traces), and says what a result is:
`analyse_trace(trace, name, sha256, input_kind, trace_s)`, `error_result(name, message, sha256,
input_kind)` and `report(results, inputs, interrupted)`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from runtrace.scan.inputs import ScanInput, TraceFile
from runtrace.trace.emulate.inputs import InputProblem, Sample
from runtrace.trace.settings import TracerSettings

R = TypeVar("R")  # one input's result


@dataclass
class RunOptions:
    workers: int = 0  # tracer processes (0: one per CPU, at most one per sample)
    tracer: TracerSettings = field(default_factory=TracerSettings)
    dask: str | None = None  # a Dask scheduler's address: trace there instead of in local processes
    keep_traces: Path | None = None  # write traces here (reused when traced with the same settings)


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan: the tracer processes were stopped; `results` holds the finished inputs."""

    def __init__(self, results: list, total: int) -> None:
        super().__init__(f"scan interrupted after {len(results)} of {total} inputs")
        self.results = results
        self.total = total


class TraceRunner(Generic[R]):
    """Inputs to results; see the module's docstring for what a subclass provides."""

    step = "scoring"  # what failed, in the error result of an input whose analysis raised

    def _safely(self, name: str, sha256: str | None, input_kind: str, run: Callable):
        try:
            return run()
        except Exception as e:  # noqa: BLE001 - one file's failure must not end the batch
            return self.error_result(name, f"{self.step} failed: {type(e).__name__}: {e}", sha256, input_kind)

    def run(self, inputs: list[ScanInput], on_result: Callable[[R], None] | None = None):
        """Scan every input and return the document; Ctrl-C ends the run with the inputs finished by
        then and exit status 130.  OSError when the run as a whole cannot go on (no room for the
        temporary traces, no Dask scheduler)."""
        try:
            results = self.scan(inputs, on_result)
        except ScanInterrupted as stop:
            return self.report(stop.results, len(inputs), interrupted=True)
        return self.report(results, len(inputs))

    # --- many inputs ------------------------------------------------------------------------------------
    def scan(
        self,
        inputs: list[ScanInput],
        on_result: Callable[[R], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[R]:
        """One result per input, in input order; `on_result` is called as each one is ready.

        Ctrl-C raises ScanInterrupted with the results finished so far; so does `stop()` returning True
        while local tracer processes run (they are killed; a Dask cluster's tracing is not stopped)."""
        results: list[R | None] = [None] * len(inputs)

        def done(index: int, result: R) -> None:
            results[index] = result
            if on_result is not None:
                on_result(result)

        by_sha: dict[str, list[int]] = {}
        samples: list[Sample] = []
        try:
            for index, item in enumerate(inputs):
                if isinstance(item, InputProblem):
                    done(index, self.error_result(item.name, item.message, item.sha256 or None))
                elif isinstance(item, TraceFile):
                    done(index, self._scan_trace_file(item))
                else:
                    if item.sha256 not in by_sha:
                        samples.append(item)
                    by_sha.setdefault(item.sha256, []).append(index)
            if samples:
                self._scan_samples(samples, inputs, by_sha, done, stop)
        except KeyboardInterrupt:
            raise ScanInterrupted([r for r in results if r is not None], len(inputs)) from None
        return [r for r in results if r is not None]

    def _scan_trace_file(self, item: TraceFile) -> R:
        from runtrace.trace.formats.registry import TraceReadError, load_any

        name = item.name
        started = time.perf_counter()
        try:
            with open(item.path, "rb") as fh:
                sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
            trace = load_any(item.path, name=name)
        except TraceReadError as e:
            # Named as the user knows the file (a stored upload's path means nothing to them).
            return self.error_result(name, _named(name, str(e).replace(str(item.path), name)), None, "trace")
        except (OSError, ValueError) as e:
            message = f"cannot read trace: {e}".replace(str(item.path), name)
            return self.error_result(name, _named(name, message), None, "trace")
        loaded = time.perf_counter() - started
        return self._safely(
            name, sha256, "trace", lambda: self.analyse_trace(trace, name, sha256, "trace", loaded)
        )

    def _scan_samples(self, samples, inputs, by_sha: dict[str, list[int]], done, stop=None) -> None:
        from runtrace.trace.emulate.batch import trace_batch
        from runtrace.trace.formats.native import load_trace

        o = self.options
        settings = o.tracer
        workers = min(o.workers or os.cpu_count() or 1, len(samples))

        def finished(outcome) -> None:
            indices = by_sha.get(outcome.sha256, [])
            first = inputs[indices[0]].name if indices else outcome.name
            if outcome.status == "error":
                result = self.error_result(first, outcome.error, outcome.sha256, "pe")
            else:
                result = self._safely(
                    first, outcome.sha256, "pe", lambda: self._analyse_saved(outcome, first, load_trace)
                )
            for k, index in enumerate(indices):
                # The same bytes under another name (a copy, an archive member): the same analysis.
                done(index, result if k == 0 else result.model_copy(update={"name": inputs[index].name}))

        def run(out: Path, keep: bool) -> None:
            if o.dask:
                from runtrace.trace.emulate.dask_runner import trace_batch_dask

                trace_batch_dask(samples, out, o.dask, settings, on_done=finished)
            else:
                # A trace read once and deleted is not worth compressing (see save_trace).
                trace_batch(samples, out, settings, workers, on_done=finished, stop=stop, compress=keep)

        if o.keep_traces is not None:  # the service: traces kept for download, reused by sha256
            run(o.keep_traces, keep=True)
            return
        # Traces go to a private temporary directory outside the project and are deleted as soon as
        # they are scored; nothing is reused between runs (a scan always traces afresh).
        with tempfile.TemporaryDirectory(prefix="runtrace-scan-") as tmp:
            run(Path(tmp), keep=False)

    def _analyse_saved(self, outcome, name: str, load_trace) -> R:
        path = Path(outcome.path)
        try:
            trace = load_trace(path)
        finally:
            if self.options.keep_traces is None:
                path.unlink(missing_ok=True)
        return self.analyse_trace(trace, name, outcome.sha256, "pe", outcome.wall_time_s)


def _named(name: str, message: str) -> str:
    return message if name in message else f"{name}: {message}"

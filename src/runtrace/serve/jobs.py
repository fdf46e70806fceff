"""Running scan jobs: a bounded pool of worker threads sharing one loaded model.

The model is loaded once, when the service starts (its ONNX Runtime sessions are safe to run from
several threads), and every job is scored and explained in this process, by the scanner `runtrace scan`
uses, so a job's result is exactly the record `runtrace scan --json` writes for that file.  Tracing
still happens in a child process per sample, forked by the tracer's batch runner with the tracer's time
and memory caps: a sample that hangs or blows up the emulator costs that job only, and a job whose scan
is deleted is stopped by killing its tracer child.  `workers` bounds how many scans run at once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtrace.scan.defaults import DEFAULT_EXPLAIN
from runtrace.scan.inputs import scan_input
from runtrace.scan.neighbours import index_info
from runtrace.scan.runner import ScanInterrupted
from runtrace.scan.scanner import Scanner, ScanOptions
from runtrace.serve.store import Job, JobStore, SampleStore
from runtrace.trace.settings import TRACER_VERSION, TracerSettings

_IDLE_WAIT_S = 1.0


@dataclass
class ScanSettings:
    model_dir: Path | None = None  # None: the bundled model
    tracer: TracerSettings = field(default_factory=TracerSettings)
    explain: int = DEFAULT_EXPLAIN
    dask: str | None = None  # scans trace on this Dask scheduler instead of in local processes
    traces: Path | None = None  # where traces are kept for download (None: beside the samples)


@dataclass
class ScanService:
    """The model the service scans with, the stores, and the worker pool."""

    settings: ScanSettings
    jobs: JobStore
    samples: SampleStore
    workers: int = 1
    _scanner: Scanner = field(init=False)
    _wake: threading.Condition = field(default_factory=threading.Condition, init=False)
    _running: set[str] = field(default_factory=set, init=False)  # ids of the jobs being scanned
    _cancelled: set[str] = field(default_factory=set, init=False)  # ... of those deleted meanwhile
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)
    # Storing a sample and deleting the last scan of it must not interleave, or a new scan could lose
    # its sample to the deletion of an old one.
    _samples_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # Two scans of the same bytes at once would write the same trace file: one waits for the other and
    # then takes its result.
    _file_locks: defaultdict = field(default_factory=lambda: defaultdict(threading.Lock), init=False)
    # Callbacks of clients waiting for a job to finish or go (`GET /scans/{id}?wait=`), by job id.
    _watchers: dict[str, list[Callable[[], None]]] = field(default_factory=dict, init=False)
    _watchers_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.traces = s.traces or self.samples.root.parent / "traces"
        self.traces.mkdir(parents=True, exist_ok=True)
        options = ScanOptions(
            explain=s.explain, workers=1, tracer=s.tracer, dask=s.dask, keep_traces=self.traces
        )
        self._scanner = Scanner.load(s.model_dir, options)  # ScannerError: a one-line reason
        # The tracer's modules (Speakeasy, unicorn) are imported once here rather than in every forked
        # tracer child: the children start with them loaded, as the batch command's children do.
        import runtrace.trace.emulate.batch  # noqa: F401

    # --- the model -------------------------------------------------------------------------------------
    @property
    def model_key(self) -> str:
        mid = self._scanner.model_id
        # A result is reused only when the same model and the same similarity index would produce it.
        index = self._scanner.similar.digest if self._scanner.similar is not None else None
        return f"{mid.weights_sha256}:{mid.version or ''}" + (f":{index}" if index else "")

    def model_description(self) -> dict:
        index = self._scanner.similar
        return {
            "model": self._scanner.model_info.model_dump(),
            "decision": self._scanner.decision.model_dump(),
            "similar": index_info(index).model_dump() if index is not None else None,
            "tracer_version": TRACER_VERSION,
            "warnings": self._scanner.warnings,
        }

    # --- jobs ------------------------------------------------------------------------------------------
    def submit_batch(self, upload_name: str, files: list[tuple[str, str, bytes]]) -> str:
        """One batch for an upload: a scan per (sha256, name, bytes); returns the batch id."""
        batch = self.jobs.add_batch(upload_name)
        for sha256, name, data in files:
            self.submit(sha256, name, data, batch)
        return batch

    def submit(self, sha256: str, name: str, data: bytes, batch: str | None = None) -> Job:
        """Store the bytes and queue a scan, or answer at once from an earlier scan of the same bytes by
        the same model."""
        earlier = self.jobs.reusable_result(sha256, self.model_key)
        if earlier is not None:
            return self.jobs.add(sha256, name, self.model_key, {**earlier, "name": name}, batch)
        with self._samples_lock:
            self.samples.put(sha256, data)
            job = self.jobs.add(sha256, name, self.model_key, batch=batch)
        with self._wake:
            self._wake.notify()
        return job

    def delete(self, job_id: str) -> Job | None:
        with self._samples_lock:
            job = self.jobs.delete(job_id)
            if job is None:
                return None
            if self.jobs.references(job.sha256) == 0:
                self.samples.remove(job.sha256)
                for leftover in self.traces.glob(f"{job.sha256}.*"):
                    leftover.unlink(missing_ok=True)
        if job_id in self._running:
            self._cancelled.add(job_id)  # its scan sees this within a few ms and kills its tracer
        self._announce(job_id)
        return job

    def watch(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Have `callback()` called (from a worker thread) when the job finishes or is deleted; returns
        the function that stops watching.  The caller reads the job again after watching, so a job that
        finished in between is not missed."""
        with self._watchers_lock:
            self._watchers.setdefault(job_id, []).append(callback)

        def unwatch() -> None:
            with self._watchers_lock:
                callbacks = self._watchers.get(job_id, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._watchers.pop(job_id, None)

        return unwatch

    def _announce(self, job_id: str) -> None:
        with self._watchers_lock:
            callbacks = list(self._watchers.get(job_id, ()))
        for callback in callbacks:
            callback()

    # --- traces ----------------------------------------------------------------------------------------
    def trace_file(self, job: Job) -> Path | None:
        """The run trace behind a finished scan: the one its emulation wrote, or the uploaded trace file;
        None when there is none (the scan failed, or is not finished)."""
        if job.status != "done" or not job.result:
            return None
        if job.result.get("input_kind") == "trace":
            path = self.samples.path(job.sha256)
        else:
            path = self.traces / f"{job.sha256}.rtrace"
        return path if path.is_file() else None

    # --- the pool --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.jobs.requeue_interrupted()
        self._stopping = False
        for k in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"runtrace-scan-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking jobs and running scans (their tracer children are killed); they are queued again
        at the next start."""
        self._stopping = True
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _work(self) -> None:
        while not self._stopping:
            job = self.jobs.claim()
            if job is None:
                with self._wake:
                    self._wake.wait(_IDLE_WAIT_S)
                continue
            with self._file_locks[job.sha256]:
                earlier = self.jobs.reusable_result(job.sha256, job.model_key)
                if earlier is not None:  # the same bytes finished meanwhile (many uploads of one file)
                    self.jobs.finish(job.id, {**earlier, "name": job.name})
                    self._announce(job.id)
                    continue
                result = self._run_scan(job)
            if result is not None:
                self.jobs.finish(job.id, result)
                self._announce(job.id)

    def _run_scan(self, job: Job) -> dict | None:
        """The scan's record for the job's file; None when the job was deleted or the service stops."""
        path = self.samples.path(job.sha256)
        if not path.exists():
            return self._error(job, "the stored sample is missing")
        self._running.add(job.id)
        try:
            # The stored file is sorted (PE sample, trace file) and named as `runtrace scan NAME` would
            # sort and name the uploaded file, so both say the same about the same bytes.
            inputs = [scan_input(path, job.name)]
            results = self._scanner.scan(inputs, stop=lambda: self._stopping or job.id in self._cancelled)
        except ScanInterrupted:
            return None
        except Exception as e:  # noqa: BLE001 - a job's failure is its own error result, never the pool's
            return self._error(job, f"the scan failed: {type(e).__name__}: {e}")
        finally:
            self._running.discard(job.id)
            self._cancelled.discard(job.id)
        if self._stopping or self.jobs.get(job.id) is None or not results:
            return None
        return results[0].model_dump(mode="json")

    def _error(self, job: Job, message: str) -> dict:
        return self._scanner.error_result(job.name, message, job.sha256).model_dump(mode="json")

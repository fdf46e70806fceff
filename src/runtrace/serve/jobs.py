"""Running scan jobs: a bounded pool of worker threads, each driving one `runtrace scan --json` process.

Each job is the command line's own scan of one stored file, in its own process: the result is exactly
the record `runtrace scan --json` writes for that file, the tracer's time and memory caps apply as they
do there (its forked tracer child is watched and killed by the scan), a crash anywhere in tracing or
scoring costs that job only, and a job whose scan is deleted can be stopped by killing its process.
The threads only wait on those processes, so `workers` bounds how many scans run at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runtrace.scan.calibration import read_calibration
from runtrace.scan.npmodel import NumpyLstmModel
from runtrace.scan.scanner import Scanner
from runtrace.serve.store import Job, JobStore, SampleStore

# Past the tracer's own limits (its timeout plus the batch's 15 s hard-kill grace), scoring and the
# explanation take seconds; a scan process still running this long after its tracer's timeout is stuck.
SCAN_GRACE_S = 300.0
_IDLE_WAIT_S = 1.0


@dataclass
class ScanSettings:
    model_dir: Path
    max_instructions: int = 1_000_000
    timeout_s: float = 60.0
    memory_mb: int = 1024
    explain: int = 5
    dask: str | None = None  # scans trace on this Dask scheduler instead of in local processes


@dataclass
class ScanService:
    """The model the service scans with, the stores, and the worker pool."""

    settings: ScanSettings
    jobs: JobStore
    samples: SampleStore
    workers: int = 1
    _scanner: Scanner = field(init=False)
    _wake: threading.Condition = field(default_factory=threading.Condition, init=False)
    _running: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)
    # Storing a sample and deleting the last scan of it must not interleave, or a new scan could lose
    # its sample to the deletion of an old one.
    _samples_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        model = NumpyLstmModel.load(self.settings.model_dir)
        self._scanner = Scanner(model, read_calibration(self.settings.model_dir, model.config))

    # --- the model -------------------------------------------------------------------------------------
    @property
    def model_key(self) -> str:
        mid = self._scanner.model_id
        return f"{mid.weights_sha256}:{mid.version or ''}"

    def model_description(self) -> dict:
        return {
            "model": self._scanner.model_info.model_dump(),
            "decision": self._scanner.decision.model_dump(),
        }

    # --- jobs ------------------------------------------------------------------------------------------
    def submit(self, sha256: str, name: str, data: bytes) -> Job:
        """Store the bytes and queue a scan, or answer at once from an earlier scan of the same bytes by
        the same model."""
        earlier = self.jobs.reusable_result(sha256, self.model_key)
        if earlier is not None:
            return self.jobs.add(sha256, name, self.model_key, {**earlier, "name": name})
        with self._samples_lock:
            self.samples.put(sha256, data)
            job = self.jobs.add(sha256, name, self.model_key)
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
        proc = self._running.get(job_id)
        if proc is not None:
            proc.kill()
        return job

    # --- the pool --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.jobs.requeue_interrupted()
        self._stopping = False
        for k in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"runtrace-scan-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking jobs and kill running scans; they are queued again at the next start."""
        self._stopping = True
        with self._wake:
            self._wake.notify_all()
        for proc in list(self._running.values()):
            proc.kill()
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
            earlier = self.jobs.reusable_result(job.sha256, job.model_key)
            if earlier is not None:  # the same bytes finished meanwhile (many uploads of one file)
                self.jobs.finish(job.id, {**earlier, "name": job.name})
                continue
            result = self._run_scan(job)
            if result is not None:
                self.jobs.finish(job.id, result)

    def _run_scan(self, job: Job) -> dict | None:
        """The scan's record for the job's file; None when the job was deleted or the service stops."""
        path = self.samples.path(job.sha256)
        if not path.exists():
            return self._error(job, "the stored sample is missing")
        s = self.settings
        command = [
            sys.executable, "-m", "runtrace", "scan", "--json", "--model", str(s.model_dir),
            "--workers", "1", "--explain", str(s.explain), "--max-instructions", str(s.max_instructions),
            "--timeout", str(s.timeout_s), "--memory-mb", str(s.memory_mb),
            *(["--dask", s.dask] if s.dask else []), str(path),
        ]  # fmt: skip
        env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        self._running[job.id] = proc
        try:
            out, err = proc.communicate(timeout=s.timeout_s + SCAN_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return self._error(job, f"the scan did not finish within {s.timeout_s + SCAN_GRACE_S:.0f} s")
        finally:
            self._running.pop(job.id, None)
        if self._stopping or self.jobs.get(job.id) is None:
            return None
        try:
            result = json.loads(out)["results"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            return self._error(job, f"the scan failed (exit status {proc.returncode}): {last}")
        return {**result, "name": job.name}

    def _error(self, job: Job, message: str) -> dict:
        return self._scanner.error_result(job.name, message, job.sha256).model_dump(mode="json")

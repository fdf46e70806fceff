"""From inputs to verdicts: trace (in child processes), represent, score, explain.

PE samples are emulated with `runtrace.trace.emulate.batch.trace_batch` into a temporary directory: one forked
child per sample with the tracer's time and memory limits, exactly as `runtrace trace` does, so a sample
that hangs or crashes the emulator costs only its own result.  Each trace is scored in the parent as
soon as its child finishes.  Existing trace files are read in the parent (reading executes nothing).

Every problem with one input becomes that input's error result, in one line; the batch goes on.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtrace.scan.calibration import Calibration
from runtrace.scan.explain import DEFAULT_CANDIDATES, UnitAttribution, attribute
from runtrace.scan.inputs import ScanInput, TraceFile
from runtrace.scan.onnxmodel import OnnxModel
from runtrace.scan.report import contribution, trace_facts
from runtrace.scan.schema import (
    Decision,
    Explanation,
    FileResult,
    ModelId,
    ModelInfo,
    Summary,
    Timing,
)
from runtrace.scan.score import score_sequence
from runtrace.scan.sequence import encode_for_model
from runtrace.trace.emulate.inputs import InputProblem, Sample
from runtrace.trace.model import Trace

# Fewer executed instructions than this and the verdict is "unknown".  A Windows program's start-up
# code (C runtime initialisation before main/WinMain) alone runs thousands of instructions; a trace this
# short means the emulator stopped in the first function or two (an unsupported trick, a fault, a
# missing dependency), and a verdict on it would be a verdict on the loader stub, not on the program.
DEFAULT_MIN_INSTRUCTIONS = 200
DEFAULT_EXPLAIN = 5


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan: the tracer processes were stopped; `results` holds the finished inputs."""

    def __init__(self, results: list[FileResult], total: int) -> None:
        super().__init__(f"scan interrupted after {len(results)} of {total} inputs")
        self.results = results
        self.total = total


@dataclass
class ScanOptions:
    min_instructions: int = DEFAULT_MIN_INSTRUCTIONS
    explain: int = DEFAULT_EXPLAIN  # contributions per result (0: no explanation)
    candidates: int = DEFAULT_CANDIDATES  # units occluded exactly
    workers: int = 0  # tracer processes (0: one per CPU, at most one per sample)
    max_instructions: int = 1_000_000
    timeout_s: float = 60.0
    memory_mb: int = 1024
    dask: str | None = None  # a Dask scheduler's address: trace there instead of in local processes


@dataclass
class Scanner:
    model: OnnxModel
    calibration: Calibration
    options: ScanOptions = field(default_factory=ScanOptions)

    # --- model description, repeated in every result ----------------------------------------------------
    @property
    def model_id(self) -> ModelId:
        return ModelId(
            kind=self.model.kind,
            version=self.calibration.model_version,
            weights_sha256=self.model.weights_sha256,
        )

    @property
    def model_info(self) -> ModelInfo:
        m = self.model
        return ModelInfo(
            **self.model_id.model_dump(),
            path=m.path,
            representation=m.representation,
            normalisation=m.normalisation,
            api_tokens=m.api,
            window=m.window,
            aggregation=m.aggregation,
        )

    @property
    def decision(self) -> Decision:
        c = self.calibration
        return Decision(threshold=c.threshold, target_fpr=c.target_fpr, source=c.source)

    # --- one trace ------------------------------------------------------------------------------------
    def analyse_trace(
        self, trace: Trace, name: str, sha256: str | None, input_kind: str, trace_s: float = 0.0
    ) -> FileResult:
        m = self.model
        started = time.perf_counter()
        seq = encode_for_model(trace, m.representation, m.normalisation, m.api, m.max_tokens, m.window)
        n_instructions = trace.instruction_count
        judged = n_instructions >= self.options.min_instructions
        want_explanation = judged and self.options.explain > 0
        score = score_sequence(m, seq)
        scored_at = time.perf_counter()
        explanation = None
        if want_explanation:
            units = attribute(m, trace, seq, score, candidates=self.options.candidates)
            explanation = self._explanation(trace, units)
        done = time.perf_counter()

        probability = score.probability
        reason = None
        if not judged:
            verdict = "unknown"
            reason = _too_short(trace, n_instructions, self.options.min_instructions)
        else:
            verdict = "malicious" if probability >= self.calibration.threshold else "benign"
        return FileResult(
            model=self.model_id,
            name=name,
            sha256=sha256,
            input_kind=input_kind,
            status="ok",
            verdict=verdict,
            probability=probability,
            decision=self.decision,
            reason=reason,
            traced_sample_sha256=trace.meta.sha256 or None,
            trace=trace_facts(trace, seq, score.batch.positions, score.outputs.logits),
            explanation=explanation,
            timing=Timing(
                trace_s=round(trace_s, 4),
                score_s=round(scored_at - started, 4),
                explain_s=round(done - scored_at, 4),
            ),
        )

    def error_result(self, name: str, message: str, sha256: str | None = None, input_kind: str = "unknown"):
        return FileResult(
            model=self.model_id,
            name=name,
            sha256=sha256,
            input_kind=input_kind,
            status="error",
            verdict=None,
            probability=None,
            decision=None,
            reason=" ".join(message.split()),
            traced_sample_sha256=None,
            trace=None,
            explanation=None,
            timing=None,
        )

    def _safely(self, name: str, sha256: str | None, input_kind: str, run: Callable[[], FileResult]):
        try:
            return run()
        except Exception as e:  # noqa: BLE001 - one file's failure must not end the batch
            return self.error_result(name, f"scoring failed: {type(e).__name__}: {e}", sha256, input_kind)

    def _explanation(self, trace: Trace, units: list[UnitAttribution]) -> Explanation:
        shown = units[: self.options.explain]
        calls = sorted(trace.api_calls, key=lambda c: c.position)
        call_positions = np.fromiter((c.position for c in calls), dtype=np.int64, count=len(calls))
        contributions = [
            contribution(rank, trace, unit, calls, call_positions) for rank, unit in enumerate(shown, 1)
        ]
        baseline = (
            "the OOV token"
            if self.model.representation == "ism"
            else "a block of one OOV instruction, OOV identity"
        )
        return Explanation(
            baseline=baseline,
            units_total=len(units),
            units_exact=sum(u.contribution is not None for u in units),
            contributions=contributions,
        )

    # --- many inputs ------------------------------------------------------------------------------------
    def scan(
        self,
        inputs: list[ScanInput],
        on_result: Callable[[FileResult], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[FileResult]:
        """One result per input, in input order; `on_result` is called as each one is ready.

        Ctrl-C raises ScanInterrupted with the results finished so far; so does `stop()` returning True
        while local tracer processes run (they are killed; a Dask cluster's tracing is not stopped)."""
        results: list[FileResult | None] = [None] * len(inputs)

        def done(index: int, result: FileResult) -> None:
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

    def _scan_trace_file(self, item: TraceFile) -> FileResult:
        from runtrace.trace.formats.registry import TraceReadError, load_any

        name = item.name
        started = time.perf_counter()
        try:
            with open(item.path, "rb") as fh:
                sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
            trace = load_any(item.path)
        except TraceReadError as e:
            return self.error_result(name, _named(name, str(e)), None, "trace")
        except (OSError, ValueError) as e:
            return self.error_result(name, _named(name, f"cannot read trace: {e}"), None, "trace")
        loaded = time.perf_counter() - started
        return self._safely(
            name, sha256, "trace", lambda: self.analyse_trace(trace, name, sha256, "trace", loaded)
        )

    def _scan_samples(self, samples, inputs, by_sha: dict[str, list[int]], done, stop=None) -> None:
        from runtrace.trace.emulate.batch import trace_batch
        from runtrace.trace.emulate.emulator import TracerSettings
        from runtrace.trace.formats.native import load_trace

        o = self.options
        settings = TracerSettings(
            max_instructions=o.max_instructions, timeout_s=o.timeout_s, memory_mb=o.memory_mb
        )
        workers = min(o.workers or os.cpu_count() or 1, len(samples))

        def finished(outcome) -> None:
            indices = by_sha.get(outcome.sha256, [])
            first = inputs[indices[0]].name if indices else outcome.name
            if outcome.status == "error":
                result = self.error_result(first, outcome.error, outcome.sha256, "pe")
            else:
                result = self._safely(
                    first, outcome.sha256, "pe", lambda: self._analyse_saved(outcome, load_trace)
                )
            for k, index in enumerate(indices):
                # The same bytes under another name (a copy, an archive member): the same analysis.
                done(index, result if k == 0 else result.model_copy(update={"name": inputs[index].name}))

        # Traces go to a private temporary directory outside the project and are deleted as soon as
        # they are scored; nothing is reused between runs (a scan always traces afresh).
        with tempfile.TemporaryDirectory(prefix="runtrace-scan-") as tmp:
            if o.dask:
                from runtrace.trace.emulate.dask_runner import trace_batch_dask

                trace_batch_dask(samples, Path(tmp), o.dask, settings, on_done=finished)
            else:
                trace_batch(samples, Path(tmp), settings, workers, on_done=finished, stop=stop)

    def _analyse_saved(self, outcome, load_trace) -> FileResult:
        path = Path(outcome.path)
        try:
            trace = load_trace(path)
        finally:
            path.unlink(missing_ok=True)
        return self.analyse_trace(trace, outcome.name, outcome.sha256, "pe", outcome.wall_time_s)


# --- helpers ----------------------------------------------------------------------------------------------


def summarize(results: list[FileResult]) -> Summary:
    verdicts = Counter(r.verdict for r in results if r.status == "ok")
    return Summary(
        files=len(results),
        malicious=verdicts.get("malicious", 0),
        benign=verdicts.get("benign", 0),
        unknown=verdicts.get("unknown", 0),
        errors=sum(r.status == "error" for r in results),
    )


def exit_code(results: list[FileResult]) -> int:
    """As clamscan: 1 when anything is malicious (a detection takes priority over errors, so a batch
    with one unreadable file still reports its detections), else 2 when anything failed, else 0.
    `unknown` is not a detection: it exits 0 unless something else says otherwise."""
    if any(r.verdict == "malicious" for r in results):
        return 1
    if any(r.status == "error" for r in results):
        return 2
    return 0


def _named(name: str, message: str) -> str:
    return message if name in message else f"{name}: {message}"


def _too_short(trace: Trace, n: int, minimum: int) -> str:
    meta = trace.meta
    why = f"{meta.stop_reason}: {meta.stop_detail}" if meta.stop_detail else str(meta.stop_reason)
    what = "nothing executed" if n == 0 else f"only {n} instruction{'s' if n != 1 else ''} executed"
    return f"{what} ({why}); at least {minimum} are needed for a verdict"

"""From inputs to verdicts: trace (in child processes), represent, score, explain, and the nearest known
programs beside each verdict.

How inputs become traces (PE samples emulated in tracer children, trace files read, every problem one
error result) is `runtrace.scan.runner.TraceRunner`'s; a Scanner says what one trace's result is.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtrace.models.spec import CONFIG
from runtrace.paths import default_model_dir
from runtrace.scan.calibration import Calibration, CalibrationError, read_calibration
from runtrace.scan.defaults import DEFAULT_EXPLAIN
from runtrace.scan.explain import DEFAULT_CANDIDATES, LOGIT, Attribution, UnitAttribution, logit
from runtrace.scan.kinds import ScanModel, explain, load_model, score
from runtrace.scan.neighbours import DEFAULT_NEIGHBOURS, default_index_dir, find_neighbours, load_index
from runtrace.scan.onnxmodel import ModelError
from runtrace.scan.report import CallTexts, api_call_log, behaviour, contribution, trace_facts
from runtrace.scan.runner import RunOptions, TraceRunner
from runtrace.scan.schema import (
    Decision,
    Explanation,
    FileResult,
    ModelId,
    ModelInfo,
    ScanReport,
    Summary,
    Timing,
)
from runtrace.scan.sequence import encode_for_model
from runtrace.similar.index import IndexFileError, SimilarityIndex
from runtrace.trace.model import Trace
from runtrace.trace.settings import TRACER_VERSION

# An explanation is called weak when no row shown moves P by more than WEAK_DELTA on its own, or when the
# rows shown together account for less than WEAK_SHARE of the score; with the score closer than
# MIN_DISTANCE to the reference (every unit masked) there is no score for rows to account for.
WEAK_DELTA = 0.01
WEAK_SHARE = 0.25
MIN_DISTANCE = 0.01
# The same on the logit scale, for models that weigh their explanations there (`Attribution.scale`; the
# n-gram model, whose probabilities saturate: see docs/scan.md).  0.1 in logit units is a 10 % change of
# the odds, what 0.01 is to P near 0.5 (0.025 there).
LOGIT_WEAK_DELTA = 0.1
LOGIT_MIN_DISTANCE = 0.1
# A benign verdict carries a warning when the calibration's held-out malware with as many API calls as
# the program made was flagged less often than this: the verdict then says more about the emulation
# (the program showed little) than about the program.
WEAK_RECALL = 0.5

# Exit statuses (clamscan's 0/1/2, and 3 for files the model could not judge).
CLEAN, MALICIOUS, ERRORS, UNKNOWN, INTERRUPTED = 0, 1, 2, 3, 130


class ScannerError(ValueError):
    """The scanner cannot start: no model, a broken model or calibration (one line)."""


@dataclass
class ScanOptions(RunOptions):
    # Traces with fewer executed instructions are "unknown"; None: the shortest trace the model was
    # trained on (its config.json), since a verdict on a shorter one is a guess outside its data.
    min_instructions: int | None = None
    explain: int = DEFAULT_EXPLAIN  # rows per direction (0: no explanation)
    candidates: int = DEFAULT_CANDIDATES  # units occluded exactly
    neighbours: int = DEFAULT_NEIGHBOURS  # nearest known files listed beside the verdict (0: none)


@dataclass
class Scanner(TraceRunner[FileResult]):
    model: ScanModel
    calibration: Calibration
    options: ScanOptions = field(default_factory=ScanOptions)
    similar: SimilarityIndex | None = None  # known programs, for the nearest ones beside each verdict

    def __post_init__(self) -> None:
        # Every probability the model answers from here on is on the calibration's scale, the one its
        # threshold is on (`scan.calibration`): the file's, each window's, the explanation's.
        self.model.probability_map = self.calibration.probability_map

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        options: ScanOptions | None = None,
        threshold: float | None = None,
        index_dir: Path | None = None,
    ) -> Scanner:
        """The scanner for a model directory (default: the bundled model); `threshold` replaces the
        calibrated one; the similarity index is `index_dir`, else the model's `similar/` when it has one
        (none is loaded with `options.neighbours` 0).  ScannerError (one line) when the model, its
        calibration or the index cannot be used."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ScannerError(f"--threshold must be between 0 and 1, not {threshold}")
        if model_dir is None:
            model_dir = default_model_dir()
            if not (model_dir / CONFIG).exists():
                raise ScannerError(
                    f"no default model installed ({model_dir} is missing or empty); "
                    "pass --model DIR with a model directory written by `runtrace train`"
                )
        try:
            model = load_model(model_dir)
            calibration = read_calibration(model_dir)
        except (ModelError, CalibrationError) as e:
            raise ScannerError(str(e)) from None
        if threshold is not None:
            source = "--threshold on the command line (no FPR calibration)"
            calibration = Calibration(
                threshold, None, source, calibration.model_version, calibration.probability_map
            )
        options = options or ScanOptions()
        similar = None
        if options.neighbours > 0 and (index_dir is not None or default_index_dir(model_dir).is_dir()):
            try:
                similar = load_index(index_dir or default_index_dir(model_dir))
            except IndexFileError as e:
                raise ScannerError(str(e)) from None
        return cls(model, calibration, options, similar)

    @property
    def min_instructions(self) -> int:
        """The `unknown` floor: the option, else the model's training minimum; never below 1 (a trace
        of nothing is never judged)."""
        chosen = self.options.min_instructions
        return max(self.model.min_instructions if chosen is None else chosen, 1)

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
            trained_tracer_versions=m.tracer_versions,
        )

    @property
    def warnings(self) -> list[str]:
        """What limits every verdict of this scanner: a model trained on another tracer revision's
        traces sees programs run further or differently than it learned them."""
        trained = self.model.tracer_versions
        if trained is None:
            return [
                "the model does not record which tracer made its training traces; "
                f"scans trace with {TRACER_VERSION}"
            ]
        if TRACER_VERSION not in trained:
            return [
                f"the model was trained on traces of {', '.join(trained)}; this scan traces with "
                f"{TRACER_VERSION}: its verdicts may be less reliable until it is retrained"
            ]
        return []

    def trace_warnings(self, trace: Trace, input_kind: str) -> list[str]:
        """What limits one imported trace's verdict beyond the scanner's own warnings: a trace made by
        another tracer revision than the model's training traces (older revisions miss blocks, e.g.
        the one after every API call before revision 13), or by a debugger, which the model never saw."""
        trained = self.model.tracer_versions
        if input_kind != "trace" or not trained:
            return []
        made_by = trace.meta.tracer_version
        if trace.meta.source != "emulator":
            return [
                f"an imported {trace.meta.source} trace: the model was trained on the emulator's traces "
                f"({', '.join(trained)}), which run the program differently"
            ]
        if made_by in trained:
            return []
        return [
            f"this trace was made by {made_by or 'a tracer that did not record its revision'}, the model "
            f"trained on traces of {', '.join(trained)}: scan the program itself to trace it with "
            f"{TRACER_VERSION}"
        ]

    def verdict_warnings(self, trace: Trace, verdict: str) -> list[str]:
        """A benign verdict on a program that did as little in the emulator as most held-out malware the
        threshold missed: under `WEAK_RECALL` of the malware with that many API calls was flagged in the
        calibration's out-of-fold scores, so "benign" here mostly says the emulation showed nothing."""
        table = self.calibration.recall_by_api_calls
        if verdict != "benign" or table is None or self.calibration.target_fpr is None:
            return []
        calls = len(trace.api_calls)
        found = table.bin_for(calls)
        if found is None or found.recall >= WEAK_RECALL:
            return []
        return [
            f"benign on little behaviour: the program made {calls:,} API calls in the emulator; of the "
            f"held-out malware that made {found.describe()} calls, the calibrated threshold flagged "
            f"{found.flagged} of {found.malicious} ({found.recall:.0%}) out of fold"
        ]

    @property
    def decision(self) -> Decision:
        c = self.calibration
        mapped = None if c.probability_map is None else c.probability_map.describe()
        return Decision(threshold=c.threshold, target_fpr=c.target_fpr, source=c.source, probability=mapped)

    # --- one trace ------------------------------------------------------------------------------------
    def analyse_trace(
        self, trace: Trace, name: str, sha256: str | None, input_kind: str, trace_s: float = 0.0
    ) -> FileResult:
        """The record of one trace: judged when it is at least as long as the model's floor, else
        `unknown` without a probability (the model is not asked)."""
        m = self.model
        started = time.perf_counter()
        seq = encode_for_model(
            trace, m.representation, m.normalisation, m.api, m.max_tokens, m.window, m.api_args
        )
        n_instructions = trace.instruction_count
        judged = n_instructions >= self.min_instructions
        scored = score(m, seq) if judged else None
        scored_at = time.perf_counter()
        explanation = None
        if judged and self.options.explain > 0:
            explanation = self._explanation(trace, explain(m, trace, seq, scored, self.options.candidates))
        done = time.perf_counter()

        if judged:
            probability, reason = scored.probability, None
            verdict = "malicious" if probability >= self.calibration.threshold else "benign"
        else:
            probability, verdict = None, "unknown"
            reason = _too_short(trace, n_instructions, self.min_instructions, self.options.min_instructions)
        neighbours = None
        if self.similar is not None and self.options.neighbours > 0:
            neighbours = find_neighbours(self.similar, trace, self.options.neighbours, verdict, sha256)
        matched = time.perf_counter()
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
            trace=trace_facts(trace, seq, scored),
            behaviour=behaviour(trace),
            api_calls=api_call_log(trace),
            explanation=explanation,
            neighbours=neighbours,
            warnings=self.trace_warnings(trace, input_kind) + self.verdict_warnings(trace, verdict),
            timing=Timing(
                trace_s=round(trace_s, 4),
                score_s=round(scored_at - started, 4),
                explain_s=round(done - scored_at, 4),
                neighbours_s=round(matched - done, 4),
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
            behaviour=None,
            api_calls=None,
            explanation=None,
            timing=None,
        )

    def _explanation(self, trace: Trace, attribution: Attribution) -> Explanation:
        """Rows both ways, each ranked by effect: what pushed the file towards malicious and what pushed
        it towards benign; then how much of the score the rows shown account for, measured by masking
        them together, and a plain note when that is little."""
        n = self.options.explain
        units = attribution.units
        towards_malicious = [u for u in units if _effect(u) > 0][:n]  # `units` is sorted largest first
        benign_first = sorted(
            (u for u in units if _effect(u) < 0), key=lambda u: (u.contribution is None, _effect(u))
        )
        towards_benign = benign_first[:n]
        shown = towards_malicious + towards_benign
        p, reference = attribution.probability, attribution.reference_probability
        without = attribution.masked_probability(u.code for u in shown)
        on_logits = attribution.scale == LOGIT
        if on_logits:  # share and size weighed on logits; every row's estimate is its exact logit change
            at, ref_at, without_at = logit(p), logit(reference), logit(without)
            largest = max((abs(u.estimate) for u in shown), default=0.0)
        else:
            at, ref_at, without_at = p, reference, without
            largest = max((abs(u.contribution) for u in shown if u.contribution is not None), default=0.0)
        close = abs(at - ref_at) < (LOGIT_MIN_DISTANCE if on_logits else MIN_DISTANCE)
        share = None if close else (at - without_at) / (at - ref_at)
        note = _weakness(p, reference, share, largest, len(shown), on_logits)

        calls = sorted(trace.api_calls, key=lambda c: c.position)
        call_positions = np.fromiter((c.position for c in calls), dtype=np.int64, count=len(calls))

        texts = CallTexts(calls)

        def rows(chosen: list[UnitAttribution]):
            return [contribution(rank, trace, u, texts, call_positions) for rank, u in enumerate(chosen, 1)]

        return Explanation(
            baseline=self.model.baseline_description,
            units_total=len(units),
            units_exact=sum(u.contribution is not None for u in units),
            towards_malicious=rows(towards_malicious),
            towards_benign=rows(towards_benign),
            reference_probability=round(reference, 6),
            without_shown=round(without, 6),
            shown_share=None if share is None else round(share, 4),
            weak=note is not None,
            note=note,
            evidence_only=self.model.evidence_only,
        )

    # --- the run's document -----------------------------------------------------------------------------
    def report(self, results: list[FileResult], inputs: int, interrupted: bool = False) -> ScanReport:
        """The run's result document: the results so far, their summary and the exit status."""
        return ScanReport(
            model=self.model_info,
            decision=self.decision,
            min_instructions=self.min_instructions,
            warnings=self.warnings,
            inputs=inputs,
            results=results,
            summary=summarize(results),
            exit_code=INTERRUPTED if interrupted else exit_code(results),
        )


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
    """1 when anything is malicious (a detection takes priority, as in clamscan: a batch with one
    unreadable file still reports its detections), else 2 when anything failed, else 3 when a file
    could not be judged (`unknown`: a pipeline must not read it as clean), else 0."""
    if any(r.verdict == "malicious" for r in results):
        return MALICIOUS
    if any(r.status == "error" for r in results):
        return ERRORS
    if any(r.verdict == "unknown" for r in results):
        return UNKNOWN
    return CLEAN


def _effect(unit: UnitAttribution) -> float:
    return unit.contribution if unit.contribution is not None else unit.estimate


def _weakness(
    p: float, reference: float, share: float | None, largest: float, shown: int, on_logits: bool = False
) -> str | None:
    """A plain sentence when the rows shown explain little of the score; None when they explain it.
    `on_logits`: `share` and `largest` were measured on the logit scale."""
    if shown == 0:
        return "no block or API function of the scored windows changes P(malicious) at all"
    # Saturated probabilities need their digits: 0.999995 and 0.993 both read 1.000 at three.
    shown_p = (lambda v: f"{v:.6f}") if on_logits else (lambda v: f"{v:.3f}")
    if share is None:
        distance = f"{LOGIT_MIN_DISTANCE} on the logit scale" if on_logits else f"{MIN_DISTANCE}"
        return (
            f"weak explanation: P(malicious) {shown_p(p)} is within {distance} of {shown_p(reference)}, what "
            "the model says with every block masked, so there is no score for blocks to account for"
        )
    if share < 0:
        # Masking the rows shown takes the score further from the all-masked answer, not towards it (an
        # n-gram model's malware scoring just under its answer for unrecognised code): a share such as
        # -800 % would read as nonsense.
        return (
            f"weak explanation: masking the rows shown moves P(malicious) {shown_p(p)} away from "
            f"{shown_p(reference)}, what the model says with every block masked, not towards it: the "
            "verdict rests on how the trace's blocks combine, not on these rows"
        )
    scale = " on the logit scale" if on_logits else ""
    together = f"the {shown} rows shown together account for {share:.0%} of the score{scale}"
    what = "the logit of P(malicious)" if on_logits else "P(malicious)"
    delta = LOGIT_WEAK_DELTA if on_logits else WEAK_DELTA
    if largest < delta:
        return (
            f"weak explanation: no row shown changes {what} by more than {delta} on its own "
            f"(largest {largest:.1e}) and {together}: the verdict rests on many blocks at once, not on these"
        )
    if share < WEAK_SHARE:
        return (
            f"weak explanation: {together} (P {shown_p(p)}; {shown_p(reference)} with every block masked): "
            "most of it comes from blocks not shown"
        )
    return None


def _too_short(trace: Trace, n: int, minimum: int, chosen: int | None) -> str:
    meta = trace.meta
    why = f"{meta.stop_reason}: {meta.stop_detail}" if meta.stop_detail else str(meta.stop_reason)
    what = "nothing executed" if n == 0 else f"only {n:,} instruction{'s' if n != 1 else ''} executed"
    source = "--min-instructions" if chosen is not None else "the model's training minimum"
    return f"{what} ({why}); at least {minimum:,} are needed for a verdict ({source})"

"""Which executed basic blocks made the score: occlusion, ranked by a first-order estimate.

The unit of explanation is a *basic block of the trace* (one address; every visit to it) or an *API
function* (every call to it).  A unit's contribution is what the file's P(malicious) loses when the
model no longer sees it:

    contribution(u) = P(file) - P(file with every occurrence of u in the scored windows replaced
                                     by the baseline item)

The baseline item is what the model reads for something it knows nothing about: the OOV token (ISM)
or a block of one OOV instruction with an OOV block identity (BSM); it is also what an empty window
reads.  Positive: the unit pushed the file towards "malicious"; negative: towards "benign".

Occluding every unit exactly costs one forward pass per unit and window, too much for a 1 s scan of
a trace with hundreds of distinct blocks.  So every unit is first *estimated* to first order — the
gradient of the file's logit with respect to each LSTM input vector, dotted with (input - baseline),
summed over the unit's occurrences: the linearisation of the occlusion above, on the logit scale — and
the `candidates` units with the largest |estimate| are then occluded exactly, in batched passes over
only the windows they occur in.  Reported contributions are the exact ones; the estimate is kept
beside them (it is in logit units, for ranking only).

Two more figures say how much the rows an analyst is shown explain: the *reference* probability, with
every unit of the scored windows masked at once (what the model says for a trace it knows nothing of),
and the probability with all the shown units masked together.  Their ratio is the share of the score
(its distance from the reference) the shown rows account for; occlusions are not additive, so this is
measured, not summed.

Why the logit: near P = 0 or 1 the sigmoid is flat, so the gradient of P is tiny exactly for the
windows a decisive block has saturated; ranked by it, the planted block of a synthetic task fell to
rank 23 of 29 in one case, while the logit gradient ranked it first in all cases tried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtrace.models import aggregation
from runtrace.scan.onnxmodel import OnnxModel
from runtrace.scan.score import Score
from runtrace.scan.sequence import ModelSequence
from runtrace.trace.model import Trace

DEFAULT_CANDIDATES = 32
# The scale an attribution's share of the score and the size of its rows are weighed on (`Attribution.scale`).
PROBABILITY, LOGIT = "probability", "logit"
# Probabilities are clipped this far from 0 and 1 before a logit (float32 P can reach 1.0).
LOGIT_EPS = 1e-7
# Window variants per batched forward pass.  It bounds memory: a pass copies its windows' input vectors
# and ONNX Runtime holds every step's gates for every row.  32 rather than 256: a one-file scan touched
# 7,000 fewer fresh pages (28 MB) and spent about 4 % less CPU analysing its trace (3 capa files, min of
# 6), and the same numbers out, bit for bit, on all 24 files of the scan benchmark.
MAX_ROWS_PER_PASS = 32


@dataclass
class UnitAttribution:
    code: int  # the unit's code in UnitMap.codes (what `Attribution.masked_probability` takes)
    kind: str  # "block" or "api"
    block_id: int  # trace block id for blocks, -1 for API functions
    api: str  # API function name for "api" units, "" for blocks
    estimate: float  # first-order estimate of the contribution, in file-logit units
    contribution: float | None  # exact occlusion; None when not among the candidates
    positions: int  # distinct sequence positions of the unit inside the scored windows
    windows: int  # scored windows the unit occurs in
    first_visit: int  # first visit (index into trace.visits) of the unit in the scored windows


@dataclass
class UnitMap:
    codes: np.ndarray  # (B, T) unit code per window step, -1 for padding
    kinds: list[str]
    block_ids: list[int]
    apis: list[str]


def logit(p):
    """log(p / (1 - p)), with p clipped LOGIT_EPS away from 0 and 1 (float or array)."""
    return aggregation.logit(p, LOGIT_EPS)


def unit_map(trace: Trace, seq: ModelSequence, positions: np.ndarray) -> UnitMap:
    """Unit code of every window step: blocks first (code = trace block id), then API names."""
    n_blocks = len(trace.blocks)
    api_names = sorted({c.name for c in seq.calls})
    api_code = {name: n_blocks + k for k, name in enumerate(api_names)}
    call_codes = np.fromiter((api_code[c.name] for c in seq.calls), dtype=np.int64, count=len(seq.calls))
    kinds = ["block"] * n_blocks + ["api"] * len(api_names)
    if not len(seq.origin):
        return UnitMap(np.full(positions.shape, -1, np.int64), kinds, list(range(n_blocks)), [""] * n_blocks)
    origin = seq.origin[np.maximum(positions, 0)]
    visit_block = trace.visits.astype(np.int64)
    codes = np.where(
        origin >= 0,
        visit_block[np.clip(origin, 0, max(len(visit_block) - 1, 0))] if len(visit_block) else -1,
        call_codes[np.clip(-1 - origin, 0, max(len(call_codes) - 1, 0))] if len(call_codes) else -1,
    )
    codes = np.where(positions >= 0, codes, -1)
    return UnitMap(codes, kinds, list(range(n_blocks)) + [-1] * len(api_names), [""] * n_blocks + api_names)


@dataclass
class Attribution:
    """Every unit of the scored windows with its effect, and P with any set of them masked together."""

    units: list[UnitAttribution]  # exact ones first by contribution (largest first), then by estimate
    probability: float  # the file's P(malicious)
    reference_probability: float  # P with every unit masked: the model knowing nothing of the trace
    _mask: Callable[[np.ndarray], float] | None = None  # unit codes -> P with them masked together
    scale: str = PROBABILITY  # what the scanner weighs the share and the rows on (LOGIT: `estimate`s)

    def masked_probability(self, unit_codes) -> float:
        codes = np.asarray(sorted(set(unit_codes)), dtype=np.int64)
        return self.probability if not len(codes) or self._mask is None else self._mask(codes)


def attribute(
    model: OnnxModel,
    trace: Trace,
    seq: ModelSequence,
    score: Score,
    candidates: int = DEFAULT_CANDIDATES,
) -> Attribution:
    """Every unit occurring in the scored windows, exact ones first by contribution (largest first),
    then the estimated rest by estimate."""
    batch = score.batch
    units = unit_map(trace, seq, batch.positions)
    codes = units.codes
    present = codes >= 0
    if not present.any():
        return Attribution([], score.probability, score.probability)
    x = batch.vectors()
    grad = model.gradient(x, batch.lengths, score.outputs, target="logit")
    baseline = batch.items[batch.baseline_id]
    per_step = np.einsum("btd,btd->bt", grad.astype(np.float64), (x - baseline).astype(np.float64))
    n_units = len(units.kinds)
    flat = codes[present]
    estimate = np.bincount(flat, weights=per_step[present], minlength=n_units)
    # Occurrences are distinct sequence positions: overlapping windows read some positions twice.
    # (unit, position) pairs as one sortable key; not np.unique, see represent.encode.distinct_blocks.
    positions = batch.positions[present].astype(np.int64)
    stride = int(positions.max()) + 1
    keys = np.sort(flat.astype(np.int64) * stride + positions)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    count = np.bincount(keys // stride, minlength=n_units)
    in_window = np.zeros((n_units, codes.shape[0]), dtype=bool)
    in_window[codes[present], np.nonzero(present)[0]] = True
    first_visit = first_visits(seq, batch.positions, codes, n_units)

    seen = np.flatnonzero(count)
    chosen = seen[np.argsort(-np.abs(estimate[seen]), kind="stable")][: max(candidates, 0)]
    exact = _occlude(model, score, x, codes, baseline, chosen, in_window)

    out = [
        UnitAttribution(
            int(u),
            units.kinds[u],
            units.block_ids[u],
            units.apis[u],
            float(estimate[u]),
            exact.get(int(u)),
            int(count[u]),
            int(in_window[u].sum()),
            int(first_visit[u]),
        )
        for u in seen.tolist()
    ]
    out.sort(
        key=lambda a: (
            a.contribution is None,
            -(a.contribution if a.contribution is not None else a.estimate),
        )
    )

    def mask(unit_codes: np.ndarray) -> float:
        return _masked_probability(model, score, x, codes, baseline, unit_codes)

    return Attribution(out, score.probability, mask(seen), mask)


def first_visits(seq: ModelSequence, positions: np.ndarray, codes: np.ndarray, n_units: int) -> np.ndarray:
    """Per unit, the first visit index at which it occurs in the windows (API calls: their call's
    visit), for locating it in the trace."""
    first = np.full(n_units, np.iinfo(np.int64).max, dtype=np.int64)
    present = codes >= 0
    origin = seq.origin[np.maximum(positions[present], 0)]
    call_visit = np.fromiter((c.position for c in seq.calls), dtype=np.int64, count=len(seq.calls))
    visit = np.where(origin >= 0, origin, call_visit[np.clip(-1 - origin, 0, None)] if len(call_visit) else 0)
    np.minimum.at(first, codes[present], visit)
    return first


def _masked_probability(
    model: OnnxModel, score: Score, x: np.ndarray, codes: np.ndarray, baseline: np.ndarray, units: np.ndarray
) -> float:
    """P(malicious) with every occurrence of the given units set to the baseline at once: only the
    windows they occur in run again."""
    hits = np.isin(codes, units)
    rows = np.flatnonzero(hits.any(axis=1))
    logits = score.outputs.logits.copy()
    scores = None if score.outputs.scores is None else score.outputs.scores.copy()
    for begin in range(0, len(rows), MAX_ROWS_PER_PASS):
        part = rows[begin : begin + MAX_ROWS_PER_PASS]
        masked = x[part]
        masked[hits[part]] = baseline
        out = model.window_outputs(masked, score.batch.lengths[part])
        logits[part] = out.logits
        if scores is not None:
            scores[part] = out.scores
    return float(model.file_probabilities(logits[None, :], None if scores is None else scores[None, :])[0])


def _occlude(
    model: OnnxModel,
    score: Score,
    x: np.ndarray,
    codes: np.ndarray,
    baseline: np.ndarray,
    chosen: np.ndarray,
    in_window: np.ndarray,
) -> dict[int, float]:
    """Exact contribution of each chosen unit: rerun only the windows it occurs in, with its steps set
    to the baseline vector, and aggregate with the untouched windows' outputs."""
    if len(chosen) == 0:
        return {}
    logits, scores = score.outputs.logits, score.outputs.scores
    lengths = score.batch.lengths
    unit_of = np.repeat(chosen, in_window[chosen].sum(1))
    row_of = np.nonzero(in_window[chosen])[1]
    hits = codes[row_of] == unit_of[:, None]  # (V, T): the steps each variant masks
    new_logits = np.empty(len(unit_of))
    new_scores = np.empty(len(unit_of)) if scores is not None else None
    for begin in range(0, len(unit_of), MAX_ROWS_PER_PASS):
        part = slice(begin, begin + MAX_ROWS_PER_PASS)
        rows, mask = row_of[part], hits[part]
        masked = x[rows]  # a copy (fancy indexing)
        masked[mask] = baseline
        out = model.window_outputs(masked, lengths[rows])
        new_logits[part] = out.logits
        if new_scores is not None:
            new_scores[part] = out.scores
    # One row per chosen unit: the file's window outputs with that unit's windows replaced.
    units_sorted = np.sort(chosen)
    slot = np.searchsorted(units_sorted, unit_of)
    variant_logits = np.tile(logits, (len(chosen), 1))
    variant_logits[slot, row_of] = new_logits
    variant_scores = None
    if scores is not None:
        variant_scores = np.tile(scores, (len(chosen), 1))
        variant_scores[slot, row_of] = new_scores
    masked_p = model.file_probabilities(variant_logits, variant_scores)
    return {int(u): score.probability - float(masked_p[k]) for k, u in enumerate(units_sorted.tolist())}

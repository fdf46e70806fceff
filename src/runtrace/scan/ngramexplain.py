"""Scoring one trace with an n-gram model (`scan.ngrammodel`), and which executed blocks and API
functions made the score: occlusion, every unit exact (docs/scan.md, "Explanations of the n-gram model").

The units are the sequence models' (`scan.explain`): a *basic block of the trace* (one address; every
visit to it) or an *API function* (every call to it, with its argument-class tokens).  Masking a unit
replaces each of its sequence positions by the unknown token, through which no vocabulary n-gram passes:
the feature row loses exactly the counts of the vocabulary n-gram occurrences that touch the unit, and
nothing else changes.  So

    contribution(u) = P(x) - P(x minus every vocabulary n-gram occurrence that includes a position of u)

is computed exactly for every unit, one feature row per unit, all rows in a few batched runs of the
graph.  A unit that no vocabulary n-gram passes through changes no feature: its contribution is exactly
0 without a run.  There is no first-order estimate to rank by (trees have no useful gradient); a row's
`estimate` is the same occlusion on the logit scale, logit P(x) - logit P(masked).

The reference probability (every unit masked) is the graph's answer for a row of zeros: a trace with no
n-gram the model knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtrace.scan.explain import LOGIT, Attribution, UnitAttribution, first_visits, logit, unit_map
from runtrace.scan.ngrammodel import MAX_ROWS_PER_RUN, NgramModel, NgramOccurrences
from runtrace.scan.sequence import ModelSequence
from runtrace.trace.model import Trace


@dataclass
class NgramScore:
    probability: float
    ids: np.ndarray  # the sequence as the model's token ids
    occurrences: NgramOccurrences  # of vocabulary n-grams in it
    x: np.ndarray  # (n_features,) float32 counts: the graph's input

    def positions_scored(self) -> int:
        return len(self.ids)  # the whole (max_tokens-cut) sequence

    def window_probabilities(self) -> np.ndarray:
        return np.array([self.probability])  # one "window": the whole sequence


def score_ngrams(model: NgramModel, seq: ModelSequence) -> NgramScore:
    ids = model.token_ids(seq.encoded)
    occurrences = model.occurrences(ids)
    x = model.features(occurrences)
    return NgramScore(float(model.probabilities(x[None, :])[0]), ids, occurrences, x)


def attribute_ngrams(model: NgramModel, trace: Trace, seq: ModelSequence, score: NgramScore) -> Attribution:
    """Every unit of the sequence with its exact occlusion, largest contribution first."""
    n = len(score.ids)
    if n == 0:
        return Attribution([], score.probability, score.probability, scale=LOGIT)
    positions = np.arange(n, dtype=np.int64)[None, :]
    units = unit_map(trace, seq, positions)
    code = units.codes[0]  # unit of each sequence position
    n_units = len(units.kinds)
    occ = score.occurrences
    touched, slots, columns = _unit_losses(code, occ, n_units)

    masked_p = np.empty(len(touched), dtype=np.float64)
    width = model.n_features
    for begin in range(0, len(touched), MAX_ROWS_PER_RUN):
        end = min(begin + MAX_ROWS_PER_RUN, len(touched))
        lo, hi = np.searchsorted(slots, [begin, end])
        # Each row: the trace's counts less the occurrences its unit touches.
        flat = (slots[lo:hi] - begin) * width + columns[lo:hi]
        lost = np.bincount(flat, minlength=(end - begin) * width).reshape(end - begin, width)
        masked_p[begin:end] = model.probabilities(score.x[None, :] - lost)

    p = score.probability
    contribution = np.zeros(n_units)
    contribution[touched] = p - masked_p
    estimate = np.zeros(n_units)
    estimate[touched] = logit(p) - logit(masked_p)
    count = np.bincount(code[code >= 0], minlength=n_units)
    first = first_visits(seq, positions, units.codes, n_units)
    seen = np.flatnonzero(count)
    out = [
        UnitAttribution(
            int(u),
            units.kinds[u],
            units.block_ids[u],
            units.apis[u],
            float(estimate[u]),
            float(contribution[u]),
            int(count[u]),
            1,
            int(first[u]),
        )
        for u in seen.tolist()
    ]
    out.sort(key=lambda a: -a.contribution)

    def mask(unit_codes: np.ndarray) -> float:
        masked = np.zeros(n + 1, dtype=np.int64)
        masked[1:] = np.cumsum(np.isin(code, unit_codes))
        lost = masked[occ.starts + occ.sizes] > masked[occ.starts]  # an occurrence through a masked position
        row = score.x - np.bincount(occ.columns[lost], minlength=model.n_features)
        return float(model.probabilities(row[None, :])[0])

    return Attribution(out, p, mask(seen), mask, scale=LOGIT)


def _unit_losses(code: np.ndarray, occ: NgramOccurrences, n_units: int):
    """(touched units ascending, and for each (unit, occurrence) pair the unit's slot in `touched` and the
    occurrence's column, sorted by slot): which vocabulary n-gram occurrences each unit passes through,
    each counted once however many of its positions the unit holds."""
    units, which = [], []
    for j in range(int(occ.sizes.max(initial=0))):
        inside = np.flatnonzero(j < occ.sizes)
        units.append(code[occ.starts[inside] + j])
        which.append(inside)
    if not units:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    # (unit, occurrence) as one sortable key; not np.unique, see represent.encode.distinct_blocks.
    stride = len(occ.starts)
    keys = np.sort(np.concatenate(units).astype(np.int64) * stride + np.concatenate(which))
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    pair_unit, pair_occ = keys // stride, keys % stride
    is_first = np.concatenate(([True], pair_unit[1:] != pair_unit[:-1]))
    touched = pair_unit[is_first]
    slots = np.cumsum(is_first) - 1
    return touched, slots, occ.columns[pair_occ]

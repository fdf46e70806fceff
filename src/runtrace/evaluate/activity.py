"""How much a program did in the emulator, and how much of the malware that did that little a threshold
finds.

A detector reading run traces can only find behaviour the emulator let the program show.  On corpus v2
the default model finds, at 1 % FPR, two thirds of held-out families' malware that made 1,000 API calls
or more, and one in twenty of those that made 10-99 (`docs/results.md`).  A benign verdict on a program
that did little is therefore weak evidence; `runtrace calibrate --dataset` records the table, and
`runtrace scan` says so beside such a verdict.
"""

from __future__ import annotations

import math

import numpy as np

# API calls by decade: the bins of the evaluation's slices and of the calibration's table.
API_CALL_EDGES = (0, 10, 100, 1_000, 10_000, math.inf)


def recall_by_api_calls(
    labels: np.ndarray, scores: np.ndarray, api_calls: np.ndarray, threshold: float
) -> list[dict]:
    """Per decade of API calls (`API_CALL_EDGES`), the malicious files in it and how many score at or
    above `threshold`: {"api_calls_min", "api_calls_max" (None: no upper end), "malicious", "flagged"}.
    Bins without malware are left out (there is nothing to say about them)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    api_calls = np.asarray(api_calls, dtype=np.float64)
    out = []
    for lo, hi in zip(API_CALL_EDGES[:-1], API_CALL_EDGES[1:], strict=True):
        malicious = (labels == 1) & (api_calls >= lo) & (api_calls < hi)
        if malicious.any():
            out.append(
                {
                    "api_calls_min": int(lo),
                    "api_calls_max": None if hi == math.inf else int(hi) - 1,
                    "malicious": int(malicious.sum()),
                    "flagged": int((scores[malicious] >= threshold).sum()),
                }
            )
    return out

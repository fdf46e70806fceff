"""Honest measurement of detectors: protocols, per-file metrics with intervals, baselines and reports.

See docs/evaluation.md for the protocol this package implements.
"""

from runtrace.evaluate.metrics import file_metrics
from runtrace.evaluate.protocols import BY_FILE, BY_ORIGIN, LEAKY, PROTOCOLS
from runtrace.evaluate.registry import MODELS, resolve_models
from runtrace.evaluate.runner import RunConfig, run_evaluation

__all__ = [
    "BY_FILE",
    "BY_ORIGIN",
    "LEAKY",
    "MODELS",
    "PROTOCOLS",
    "RunConfig",
    "file_metrics",
    "resolve_models",
    "run_evaluation",
]

"""Honest measurement of detectors: protocols, per-file metrics with intervals, baselines and reports.

See docs/evaluation.md for the protocol this package implements, and docs/architecture.md for what each
module does.  The package imports nothing itself, so `evaluate.names` stays light for the command line.
"""

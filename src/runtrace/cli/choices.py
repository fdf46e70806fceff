"""The fixed choices of command-line options, as Enums: typer lists them in `--help` and rejects
anything else with one line naming the option.

The values are spelled out here rather than taken from the stages (`represent`, `evaluate`, `models`)
so that `runtrace --help` and `runtrace scan` do not import torch or scikit-learn to build their
options; tests/test_cli_choices.py checks they match what the stages accept.  Trace formats are not
here: the format registry decides those, and a new format module adds its own name.
"""

from __future__ import annotations

import enum

from runtrace.represent.normalise import Normalisation  # noqa: F401  (a choice too; light to import)


class Representation(enum.StrEnum):
    ISM = "ism"
    BSM = "bsm"


class RepresentationOrAll(enum.StrEnum):
    ISM = "ism"
    BSM = "bsm"
    ALL = "all"


class Protocol(enum.StrEnum):
    LEAKY = "leaky"
    BY_FILE = "by-file"
    BY_ORIGIN = "by-origin"
    BY_FAMILY = "by-family"
    TEMPORAL = "temporal"


class ProtocolOrAll(enum.StrEnum):
    LEAKY = "leaky"
    BY_FILE = "by-file"
    BY_ORIGIN = "by-origin"
    BY_FAMILY = "by-family"
    TEMPORAL = "temporal"
    ALL = "all"


class ThresholdFit(enum.StrEnum):
    AUTO = "auto"
    INNER_CV = "inner-cv"
    HOLDOUT = "holdout"


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Windowing(enum.StrEnum):
    SLIDING = "sliding"
    FIRST_N = "first-n"
    SAMPLED = "sampled"


class Aggregation(enum.StrEnum):
    MEAN = "mean"
    MAX = "max"
    ATTENTION = "attention"


class Pooling(enum.StrEnum):
    LAST = "last"
    MEAN = "mean"
    MAX = "max"


class BlockEncoder(enum.StrEnum):
    MEAN = "mean"
    MAX = "max"
    CONV = "conv"


class ValidationBy(enum.StrEnum):
    FILE = "file"
    GROUP = "group"


class TraceAlsoWrite(enum.StrEnum):
    NATIVE = "native"
    X64DBG = "x64dbg"


class Label(enum.StrEnum):
    MALICIOUS = "malicious"
    BENIGN = "benign"


class YesNoAuto(enum.StrEnum):
    AUTO = "auto"
    YES = "yes"
    NO = "no"


class AuditSubset(enum.StrEnum):
    ALL = "all"
    MATCHED = "matched"
    BOTH = "both"

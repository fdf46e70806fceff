"""The fixed choices of command-line options, as Enums: typer lists them in `--help` and rejects
anything else with one line naming the option.

The values come from the stages that define them (`represent.names`, `models.names`, both importing
nothing heavy, and `represent.normalise`), so that building the options loads neither numpy nor torch.
The evaluation's protocols and threshold strategies are spelled out here instead: the modules defining
them load scikit-learn; tests/test_cli_choices.py checks they match.  Trace formats are not here: the
format registry decides those, and a new format module adds its own name.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from runtrace.models.names import AGGREGATIONS, BLOCK_ENCODERS, POOLINGS, VAL_BY
from runtrace.represent.names import REPRESENTATIONS, WINDOW_MODES
from runtrace.represent.normalise import Normalisation  # noqa: F401  (a choice too; light to import)


def _choices(name: str, values: Iterable[str]) -> type[enum.StrEnum]:
    """A StrEnum whose members are `values`, named in capitals ("first-n" -> FIRST_N)."""
    return enum.StrEnum(name, [(v.upper().replace("-", "_"), v) for v in values], module=__name__)


Representation = _choices("Representation", REPRESENTATIONS)
RepresentationOrAll = _choices("RepresentationOrAll", (*REPRESENTATIONS, "all"))
Windowing = _choices("Windowing", WINDOW_MODES)
Aggregation = _choices("Aggregation", AGGREGATIONS)
Pooling = _choices("Pooling", POOLINGS)
BlockEncoder = _choices("BlockEncoder", BLOCK_ENCODERS)
ValidationBy = _choices("ValidationBy", VAL_BY)


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

"""The fixed choices of command-line options, as Enums: typer lists them in `--help` and rejects
anything else with one line naming the option.

The values come from the stages that define them (`represent.names`, `models.names`, `evaluate.names`,
all importing nothing, and `represent.normalise`), so that building the options loads neither numpy,
scikit-learn nor torch.  Trace formats are not here: the format registry decides those, and a new format
module adds its own name.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from runtrace.evaluate.names import PROTOCOLS, THRESHOLD_FITS
from runtrace.models.names import AGGREGATIONS, BLOCK_ENCODERS, KINDS, NGRAM_KINDS, POOLINGS, VAL_BY
from runtrace.represent.names import REPRESENTATIONS, WINDOW_MODES
from runtrace.represent.normalise import Normalisation  # noqa: F401  (a choice too; light to import)


def _choices(name: str, values: Iterable[str]) -> type[enum.StrEnum]:
    """A StrEnum whose members are `values`, named in capitals ("first-n" -> FIRST_N)."""
    return enum.StrEnum(name, [(v.upper().replace("-", "_"), v) for v in values], module=__name__)


Representation = _choices("Representation", REPRESENTATIONS)
ModelKind = _choices("ModelKind", (*KINDS, *NGRAM_KINDS))
RepresentationOrAll = _choices("RepresentationOrAll", (*REPRESENTATIONS, "all"))
Windowing = _choices("Windowing", WINDOW_MODES)
Aggregation = _choices("Aggregation", AGGREGATIONS)
Pooling = _choices("Pooling", POOLINGS)
BlockEncoder = _choices("BlockEncoder", BLOCK_ENCODERS)
ValidationBy = _choices("ValidationBy", VAL_BY)
Protocol = _choices("Protocol", PROTOCOLS)
ProtocolOrAll = _choices("ProtocolOrAll", (*PROTOCOLS, "all"))
ThresholdFit = _choices("ThresholdFit", THRESHOLD_FITS)


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

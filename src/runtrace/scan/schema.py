"""The scan result document (`runtrace scan --json`): pydantic models, versioned.

One `ScanReport` per run; each `FileResult` in it is self-contained (schema version, tool version and
model identity are repeated in every result), so results can be split, stored and compared one by one.
`runtrace scan --schema` prints the JSON Schema generated from these classes.

Versioning: `schema_version` is "MAJOR.MINOR".  MINOR grows when fields are added (old readers keep
working); MAJOR grows when a field is removed, renamed or changes meaning.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runtrace import __version__

SCHEMA_VERSION = "1.1"

Verdict = Literal["malicious", "benign", "unknown"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tool(_Strict):
    name: Literal["runtrace"] = "runtrace"
    version: str = __version__


class ModelId(_Strict):
    """Which model produced a result: enough to tell two models apart and find the right one."""

    kind: str = Field(description="bsm-lstm or ism-lstm")
    version: str | None = Field(description="model_version from calibration.json, when given")
    weights_sha256: str = Field(description="sha256 of model.safetensors: the model's identity")


class ModelInfo(ModelId):
    path: str
    representation: Literal["ism", "bsm"]
    normalisation: str
    api_tokens: bool
    window: dict = Field(description="window settings: mode, length, count/stride")
    aggregation: str = Field(description="how window scores make the file score: mean, max, attention")


class Decision(_Strict):
    threshold: float = Field(description="a file is malicious when probability >= threshold")
    target_fpr: float | None = Field(description="false-positive rate the threshold was calibrated for")
    source: str = Field(description="where the threshold comes from")


class ApiCount(_Strict):
    name: str
    calls: int


class TraceFacts(_Strict):
    source: str = Field(description="emulator, x64dbg, x64dbg-text, ollydbg, ...")
    arch: str
    instructions: int = Field(description="executed instructions")
    blocks: int = Field(description="distinct basic blocks")
    visits: int = Field(description="executed basic blocks")
    api_calls: int
    distinct_apis: int
    top_apis: list[ApiCount] = Field(description="most called API functions, at most 10")
    stop_reason: str
    stop_detail: str
    tracer_version: str
    emulation_s: float = Field(description="wall time of the emulation (0 for imported traces)")
    sequence_length: int = Field(description="tokens (ISM) or blocks and API calls (BSM) the model reads")
    windows: int
    positions_scored: int = Field(description="sequence positions inside the scored windows")
    window_starts: list[int] = Field(
        default_factory=list, description="sequence position where each scored window starts (1.1)"
    )
    window_probabilities: list[float] = Field(
        default_factory=list, description="P(malicious) of each window on its own, in trace order (1.1)"
    )


class Contribution(_Strict):
    rank: int
    kind: Literal["block", "api"]
    address: str | None = Field(description="block start address (hex); None for API functions")
    api: str | None = Field(description="API function name for kind 'api'")
    contribution: float | None = Field(
        description="exact occlusion: P(malicious) minus P with every occurrence masked; None: estimated only"
    )
    estimate: float = Field(description="first-order estimate (file-logit units), used for ranking")
    occurrences: int = Field(description="occurrences in the scored windows")
    windows: int = Field(description="scored windows it occurs in")
    first_visit: int = Field(description="first visit index in the trace (where to look)")
    instructions: list[str] = Field(description="disassembly, 'address  instruction', at most 16 lines")
    nearby_api_calls: list[str] = Field(description="API calls made within 3 visits of its occurrences")


class Explanation(_Strict):
    method: Literal["occlusion"] = "occlusion"
    baseline: str = Field(description="what an occluded unit is replaced by")
    units_total: int = Field(description="distinct blocks and API functions in the scored windows")
    units_exact: int = Field(description="units occluded exactly (the rest were only estimated)")
    contributions: list[Contribution]


class Timing(_Strict):
    trace_s: float = Field(description="emulating or reading the trace")
    score_s: float = Field(description="encoding and scoring")
    explain_s: float


class FileResult(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=Tool)
    model: ModelId | None
    name: str = Field(description="the path, or archive.zip:member")
    sha256: str | None = Field(description="sha256 of the input file (PE or trace file)")
    input_kind: Literal["pe", "trace", "unknown"]
    status: Literal["ok", "error"]
    verdict: Verdict | None = Field(description="None when status is error")
    probability: float | None = Field(description="P(malicious) from the model; None on error")
    decision: Decision | None
    reason: str | None = Field(description="why the verdict is unknown, or the error, in one line")
    traced_sample_sha256: str | None = Field(description="sha256 recorded in the trace's metadata")
    trace: TraceFacts | None
    explanation: Explanation | None
    timing: Timing | None


class Summary(_Strict):
    files: int
    malicious: int
    benign: int
    unknown: int
    errors: int


class ScanReport(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=Tool)
    model: ModelInfo | None
    decision: Decision | None
    min_instructions: int = Field(description="traces with fewer executed instructions are 'unknown'")
    results: list[FileResult]
    summary: Summary
    exit_code: int = Field(
        description="0 nothing malicious, 1 something malicious, 2 errors only, "
        "130 stopped by Ctrl-C (results then hold only the inputs finished)",
    )

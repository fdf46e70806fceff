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
from runtrace.trace.settings import TRACER_VERSION

SCHEMA_VERSION = "2.4"

Verdict = Literal["malicious", "benign", "unknown"]


def _empty() -> list:
    # A function rather than `list`: pydantic inspects a default factory's signature, and for a builtin
    # that means parsing its text signature (tokenize's regular expressions compiled on first use: about
    # 3 ms of a one-file scan's start-up, for nine fields).
    return []


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tool(_Strict):
    name: Literal["runtrace"] = "runtrace"
    version: str = __version__


def _this_tool() -> Tool:
    return Tool()  # (see _empty)


class ModelId(_Strict):
    """Which model produced a result: enough to tell two models apart and find the right one."""

    kind: str = Field(description="bsm-lstm, ism-lstm, bsm-transformer, ngram-lgbm or ngram-lgbm-monotone")
    version: str | None = Field(description="model_version from calibration.json, when given")
    weights_sha256: str = Field(
        description="sha256 of model.safetensors (ngram-lgbm: of model.lgbm.txt, its trees): "
        "the model's identity"
    )


class ModelInfo(ModelId):
    path: str
    representation: Literal["ism", "bsm"]
    normalisation: str
    api_tokens: bool
    window: dict = Field(
        description="window settings: mode, length, count/stride; {mode: whole} for ngram-lgbm, which "
        "counts the n-grams of the whole sequence"
    )
    aggregation: str = Field(
        description="how window scores make the file score: mean, max, attention; none for ngram-lgbm"
    )
    trained_tracer_versions: list[str] | None = Field(
        default=None,
        description="the tracer revisions that wrote the model's training traces; None: not recorded (2.2)",
    )


class Decision(_Strict):
    threshold: float = Field(description="a file is malicious when probability >= threshold")
    target_fpr: float | None = Field(description="false-positive rate the threshold was calibrated for")
    source: str = Field(description="where the threshold comes from")
    probability: str | None = Field(
        default=None,
        description="how the model's score became the reported P(malicious) (Platt scaling fitted on "
        "out-of-fold scores); None: P is the model's score itself (2.3)",
    )


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
        default_factory=_empty, description="sequence position where each scored window starts (1.1)"
    )
    window_probabilities: list[float] = Field(
        default_factory=_empty, description="P(malicious) of each window on its own, in trace order (1.1)"
    )


class Contribution(_Strict):
    rank: int = Field(description="rank within its direction, 1 = the largest effect")
    kind: Literal["block", "api"]
    address: str | None = Field(description="block start address (hex); None for API functions")
    api: str | None = Field(description="API function name for kind 'api'")
    contribution: float | None = Field(
        description="exact occlusion: P(malicious) minus P with every occurrence masked; None: estimated only"
    )
    estimate: float = Field(
        description="first-order estimate (file-logit units), used for ranking; ngram-lgbm: the exact "
        "occlusion on the logit scale"
    )
    occurrences: int = Field(description="occurrences in the scored windows")
    windows: int = Field(description="scored windows it occurs in")
    first_visit: int = Field(description="first visit index in the trace (where to look)")
    instructions: list[str] = Field(description="disassembly, 'address  instruction', at most 16 lines")
    nearby_api_calls: list[str] = Field(
        description="API calls within 3 visits of its occurrences, with their arguments, most frequent first"
    )


class Explanation(_Strict):
    method: Literal["occlusion"] = "occlusion"
    baseline: str = Field(description="what an occluded unit is replaced by")
    units_total: int = Field(description="distinct blocks and API functions in the scored windows")
    units_exact: int = Field(description="units occluded exactly (the rest were only estimated)")
    towards_malicious: list[Contribution] = Field(
        description="units whose masking lowers P(malicious), largest effect first (2.0)"
    )
    towards_benign: list[Contribution] = Field(
        description="units whose masking raises P(malicious), largest effect first (2.0)"
    )
    reference_probability: float = Field(
        description="P(malicious) with every unit of the scored windows masked: the model knows nothing (2.0)"
    )
    without_shown: float = Field(
        description="P(malicious) with every row shown (both directions) masked together (2.0)"
    )
    shown_share: float | None = Field(
        description="(probability - without_shown) / (probability - reference_probability): the share of "
        "the score the rows shown account for; None when the score is within 0.01 of the reference (2.0); "
        "ngram-lgbm: the same on logits, None within 0.1"
    )
    weak: bool = Field(description="the rows shown explain little of the score; `note` says why (2.0)")
    note: str | None = Field(description="a plain sentence when the explanation is weak (2.0)")
    evidence_only: bool = Field(
        False,
        description="the model counts evidence of malice only (ngram-lgbm-monotone): masking code can only "
        "lower its score, so towards_benign is always empty and a benign verdict means too little evidence "
        "(2.4)",
    )


class ApiCallRecord(_Strict):
    visit: int = Field(description="index of the block visit after which the call happened")
    name: str = Field(description="DLL.Function")
    args: list[int | str] = Field(
        description="arguments as the emulator's handler read them: integers, dereferenced strings; "
        "empty when unknown (a stubbed call, a debugger's trace)"
    )
    result: int | None = Field(description="the value returned; None when unknown")
    return_address: str = Field(description="hex")
    stubbed: bool = Field(description="the emulator had no handler and returned 0")


class ApiCallLog(_Strict):
    total: int = Field(description="API calls in the trace")
    calls: list[ApiCallRecord] = Field(description="the first calls, in order (at most 256)")


BehaviourItem = dict[str, str | int]


class Behaviour(_Strict):
    """What the program did to the emulated machine (`runtrace show --summary`); each kind
    de-duplicated in first-seen order and capped by the tracer.  Empty for debugger traces."""

    files: list[BehaviourItem] = Field(default_factory=_empty, description="{event, path}")
    registry: list[BehaviourItem] = Field(default_factory=_empty, description="{event, key[, value]}")
    network: list[BehaviourItem] = Field(
        default_factory=_empty, description="{event, host[, port, protocol]}"
    )
    processes: list[BehaviourItem] = Field(
        default_factory=_empty, description="{event, path[, command_line]}"
    )
    mutexes: list[str] = Field(default_factory=_empty)
    strings: list[str] = Field(default_factory=_empty, description="strings the program passed to APIs")


class IndexInfo(_Strict):
    """The similarity index neighbours were found in (2.1)."""

    path: str | None = Field(description="its directory")
    sha256: str | None = Field(description="sha256 of its index.json, which holds every array's sha256")
    entries: int = Field(description="known files in it")
    malicious: int
    benign: int
    families: int = Field(description="distinct malware families among its entries")
    num_perm: int = Field(description="MinHash permutations per signature")
    threshold: float = Field(
        description="LSH threshold: known files much less alike than this (estimated Jaccard) are not found"
    )


class KnownFile(_Strict):
    """One known file near the input (2.1)."""

    sha256: str
    label: str = Field(description="malicious or benign, as the corpus labels it")
    family: str | None = Field(description="malware family, when the corpus names one")
    origin: str | None = Field(description="origin group: the package, project or archive it came from")
    source: str | None = Field(description="the corpus source it was collected from")
    file_name: str | None
    jaccard: float = Field(
        description="estimated Jaccard similarity of the two sets of executed normalised blocks "
        "(MinHash; standard error about 0.044 at 0.5)"
    )
    shared_blocks: int = Field(
        description="estimated distinct normalised blocks both executed: J(|A|+|B|)/(1+J)"
    )
    api_jaccard: float = Field(description="estimated Jaccard similarity of the API-call 3-grams")
    same_file: bool = Field(
        default=False, description="it is the input itself: the same sha256 as the input or its traced sample"
    )


class Neighbours(_Strict):
    """The known files whose executed code is most like the input's, and what they say together (2.1)."""

    k: int = Field(description="at most this many are listed")
    blocks: int = Field(description="distinct normalised blocks the input executed")
    nearest: list[KnownFile] = Field(description="most alike first; empty when nothing known is alike")
    malicious: int = Field(description="malicious files among `nearest`")
    benign: int = Field(description="benign files among `nearest`")
    majority: Literal["malicious", "benign"] | None = Field(
        description="the label of more than half of `nearest`; None when there are none or a tie"
    )
    disagrees: bool = Field(description="a majority exists and the verdict is the other label")
    note: str | None = Field(description="a plain sentence when the neighbours disagree with the verdict")


class Timing(_Strict):
    trace_s: float = Field(description="emulating or reading the trace")
    score_s: float = Field(description="encoding and scoring")
    explain_s: float
    neighbours_s: float = Field(default=0.0, description="finding the nearest known files (2.1)")


class FileResult(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=_this_tool)
    model: ModelId | None
    name: str = Field(description="the path, or archive.zip:member")
    sha256: str | None = Field(description="sha256 of the input file (PE or trace file)")
    input_kind: Literal["pe", "trace", "unknown"]
    status: Literal["ok", "error"]
    verdict: Verdict | None = Field(description="None when status is error")
    probability: float | None = Field(
        description="P(malicious) from the model; None on error and for 'unknown' (not judged, 2.0)"
    )
    decision: Decision | None
    reason: str | None = Field(description="why the verdict is unknown, or the error, in one line")
    traced_sample_sha256: str | None = Field(description="sha256 recorded in the trace's metadata")
    trace: TraceFacts | None
    behaviour: Behaviour | None = Field(description="what the program did (2.0); None on error")
    api_calls: ApiCallLog | None = Field(description="the API calls with arguments (2.0); None on error")
    explanation: Explanation | None
    neighbours: Neighbours | None = Field(
        default=None,
        description="the nearest known files by executed code (2.1); None on error, without an index, "
        "or with --neighbours 0",
    )
    warnings: list[str] = Field(
        default_factory=_empty,
        description="what limits this file's verdict beyond the report's warnings: an imported trace made "
        "by another tracer revision than the model's training traces, or by a debugger (2.3); a benign "
        "verdict on a program that did as little in the emulator as most held-out malware the threshold "
        "missed",
    )
    timing: Timing | None


class Summary(_Strict):
    files: int
    malicious: int
    benign: int
    unknown: int
    errors: int


class SimilarResult(_Strict):
    """One input of `runtrace similar` (2.1)."""

    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=_this_tool)
    name: str = Field(description="the path, or archive.zip:member")
    sha256: str | None = Field(description="sha256 of the input file (PE or trace file)")
    input_kind: Literal["pe", "trace", "unknown"]
    status: Literal["ok", "error"]
    reason: str | None = Field(description="the error, in one line; null otherwise")
    traced_sample_sha256: str | None = Field(description="sha256 recorded in the trace's metadata")
    instructions: int | None = Field(description="executed instructions")
    neighbours: Neighbours | None = Field(description="None on error")


class SimilarSummary(_Strict):
    files: int
    with_neighbours: int = Field(description="inputs with at least one known file alike")
    without_neighbours: int
    errors: int


class SimilarReport(_Strict):
    """The document `runtrace similar --json` prints (2.1)."""

    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=_this_tool)
    index: IndexInfo
    inputs: int = Field(description="inputs given; more than len(results) only when interrupted")
    results: list[SimilarResult]
    summary: SimilarSummary
    exit_code: int = Field(description="0 every input answered, 2 something failed, 130 stopped by Ctrl-C")


class ScanReport(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: Tool = Field(default_factory=_this_tool)
    model: ModelInfo | None
    decision: Decision | None
    min_instructions: int = Field(
        description="traces with fewer executed instructions are 'unknown': by default the shortest "
        "trace the model was trained on (2.0: read from the model)"
    )
    tracer_version: str = Field(
        default=TRACER_VERSION, description="the tracer this scan emulates with (2.2)"
    )
    warnings: list[str] = Field(
        default_factory=_empty,
        description="what limits every result of the run, e.g. a model trained on another tracer "
        "revision's traces (2.2)",
    )
    inputs: int = Field(description="inputs given; more than len(results) only when interrupted (2.0)")
    results: list[FileResult]
    summary: Summary
    exit_code: int = Field(
        description="1 something malicious, else 2 something failed, else 3 something unknown, else 0; "
        "130 stopped by Ctrl-C (results then hold only the inputs finished)",
    )

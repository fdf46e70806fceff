"""The checkpoint format, in one place that needs no torch: what training writes and scanning reads.

A model directory holds:

| file                   | written by            | content                                              |
| ---------------------- | --------------------- | ---------------------------------------------------- |
| `config.json`          | training, export      | format, version, kind, every configuration; `onnx`   |
| `vocabulary.json`      | training              | the fitted vocabularies, as token strings            |
| `model.safetensors`    | training              | the weights (what training and `runtrace export` read) |
| `model.items.onnx`     | export                | sequence items -> the LSTM's input vectors           |
| `model.windows.onnx`   | export                | input vectors of windows -> window logits (+ scores) |
| `model.gradient.onnx`  | export                | the gradient of chosen window outputs w.r.t. inputs  |
| `history.json`         | training              | the training log, one record per epoch               |

`runtrace.models.checkpoint` (torch) writes and reads the weights, `runtrace.models.export` (torch)
writes the graphs and records their sha256 in `config.json` under `onnx`; `runtrace.scan` reads this
module, the JSON files and the graphs, never torch.  Graph file names are fixed here, not read from
`config.json`, so a model directory cannot point the scanner at a file outside itself.

An n-gram model (`ngram-lgbm`, `runtrace.models.ngram`) holds other files:

| file                   | written by            | content                                              |
| ---------------------- | --------------------- | ---------------------------------------------------- |
| `config.json`          | training, export      | as above, with `featurizer` in place of the network  |
| `vocabulary.json`      | training              | tokens (strings and ids) and n-grams (keys) it reads |
| `model.lgbm.txt`       | training              | the trees, in LightGBM's text format                 |
| `model.onnx`           | export                | n-gram counts -> P(benign), P(malicious)             |

`runtrace.models.ngram_checkpoint` writes the first three, `runtrace.models.ngram_export` (onnxmltools)
the graph; the scanner reads the JSON files and the graph, never LightGBM.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np

from runtrace.models.names import AGGREGATIONS, BLOCK_ENCODERS, KINDS, MAX_BLOCK_TOKENS, NGRAM_KINDS, POOLINGS
from runtrace.represent.names import REPRESENTATIONS
from runtrace.represent.normalise import Normalisation
from runtrace.represent.vocabulary import Vocabulary

FORMAT_NAME = "runtrace-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
VOCABULARY = "vocabulary.json"
WEIGHTS = "model.safetensors"
HISTORY = "history.json"

# The ONNX graphs scan runs (docs/scan.md, "Inference with ONNX Runtime"), by role.
GRAPHS = {
    "items": "model.items.onnx",
    "windows": "model.windows.onnx",
    "gradient": "model.gradient.onnx",
}
# The newest opset the pinned onnxruntime (1.32) implements; torch's exporter converts its graphs to it.
ONNX_OPSET = 28
# An n-gram model's one graph, its trees (LightGBM's text model: what export reads, and the model's
# identity), and the opset onnxmltools' LightGBM converter writes (15 is the newest it accepts).
NGRAM_GRAPHS = {"trees": "model.onnx"}
NGRAM_WEIGHTS = "model.lgbm.txt"
NGRAM_ONNX_OPSET = 15

PAD, OOV = Vocabulary.PAD, Vocabulary.OOV  # fixed ids of every runtrace vocabulary
# The names a configuration's choices take (model kinds, aggregations, poolings, block encoders) are in
# `runtrace.models.names`, which the command line reads without loading numpy; imported here, checked by
# `CheckpointSpec.from_json`.
# The shortest trace a model that does not record its training minimum is taken to have been trained on:
# 1,000 instructions, what `make reproduce` builds its datasets with (`--min-instructions 1000`).
UNRECORDED_MIN_INSTRUCTIONS = 1000


class SpecError(ValueError):
    """A model directory whose files do not make a usable model (one line, naming the directory)."""


class ExportError(RuntimeError):
    """A model's ONNX graphs could not be written (one line; `runtrace.models.export`, `ngram_export`)."""


# Plain dataclasses rather than pydantic models: this module is on the scanner's start-up path, where
# building four pydantic models cost about 15 ms of a one-second scan.  Unknown keys are ignored (training
# writes more than a reader needs); a missing or mistyped one is a SpecError naming it.


@dataclass(frozen=True)
class DataSpec:
    """How the training data was built: sequences must be built the same way to mean the same.  (The
    defaults are `dataset build`'s, for a checkpoint that does not say.)"""

    normalisation: str = Normalisation.REGISTERS.value
    api: bool = True
    # API calls followed by their argument-class tokens (`dataset build --api-args`); False for every
    # model trained before the option existed.
    api_args: bool = False
    max_tokens: int | None = None  # sequences cut after this many tokens (ISM) or blocks (BSM)
    # The dataset's shortest trace (at least its --min-instructions): the model never saw a shorter one,
    # so the scanner judges none (None: not recorded, a model trained before training wrote it; see
    # UNRECORDED_MIN_INSTRUCTIONS).
    min_instructions: int | None = None
    # The tracer revisions that wrote the training traces (`TraceMeta.tracer_version`); the scanner warns
    # when it traces with another (None: not recorded, a model trained before training wrote it).
    tracer_versions: list[str] | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NetSpec:
    """The network hyperparameters a reader of the graphs needs (the graphs hold the rest)."""

    pooling: str
    bidirectional: bool = False
    num_layers: int = 1
    block_encoder: str | None = None  # BSM only
    block_id_embedding: bool = False  # BSM only
    max_block_tokens: int = MAX_BLOCK_TOKENS  # BSM only


@dataclass(frozen=True)
class OnnxSpec:
    opset: int
    exporter: str  # e.g. "torch 2.13.0"
    weights_sha256: str  # of the model.safetensors the graphs were exported from
    vocabulary_sha256: str  # of the vocabulary.json whose ids the items graph reads
    graphs: dict  # role -> sha256 of GRAPHS[role]


class _TrainingData:
    """What both kinds of `config.json` say about their training data."""

    data: DataSpec | None

    @property
    def data_spec(self) -> DataSpec:
        return self.data or DataSpec()

    @property
    def min_instructions(self) -> int:
        """The shortest trace the model was trained on (executed instructions)."""
        recorded = self.data_spec.min_instructions
        return UNRECORDED_MIN_INSTRUCTIONS if recorded is None else recorded


@dataclass(frozen=True)
class CheckpointSpec(_TrainingData):
    """`config.json` of a sequence model as every reader sees it (training adds its own fields, ignored
    here)."""

    format: str
    version: int
    kind: str
    window: dict
    aggregation: str
    model: NetSpec
    data: DataSpec | None = None
    onnx: OnnxSpec | None = None

    @property
    def representation(self) -> str:
        return KINDS[self.kind]

    @classmethod
    def from_json(cls, obj: dict) -> CheckpointSpec:
        """From parsed `config.json`; ValueError naming the first field that is missing or wrong."""
        top = _fields(cls, obj, "")
        top["model"] = NetSpec(**_fields(NetSpec, obj.get("model"), "model."))
        if obj.get("data") is not None:
            top["data"] = DataSpec(**_fields(DataSpec, obj["data"], "data."))
        if obj.get("onnx") is not None:
            top["onnx"] = OnnxSpec(**_fields(OnnxSpec, obj["onnx"], "onnx."))
        spec = cls(**top)
        if spec.kind not in KINDS:
            raise ValueError(f"model kind {spec.kind!r} is not one runtrace can scan with")
        if spec.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {spec.aggregation!r}")
        if spec.model.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {spec.model.pooling!r}")
        if spec.model.block_encoder is not None and spec.model.block_encoder not in BLOCK_ENCODERS:
            raise ValueError(f"unknown block encoder {spec.model.block_encoder!r}")
        return spec


@dataclass(frozen=True)
class FeaturizerSpec:
    """How an n-gram model counts (`runtrace.models.ngram.NgramFeaturizer`, as fitted)."""

    orders: list[int]  # n-gram orders counted
    token_space: int  # token ids are digits of this radix (`ngram_keys`); the last one is "unknown"
    max_features: int  # the vocabulary's size before the trees chose from it
    min_df: int


@dataclass(frozen=True)
class NgramSpec(_TrainingData):
    """`config.json` of an n-gram model (`NGRAM_KINDS`)."""

    format: str
    version: int
    kind: str
    representation: str
    featurizer: FeaturizerSpec
    data: DataSpec | None = None
    onnx: OnnxSpec | None = None

    @classmethod
    def from_json(cls, obj: dict) -> NgramSpec:
        """From parsed `config.json`; ValueError naming the first field that is missing or wrong."""
        top = _fields(cls, obj, "")
        top["featurizer"] = FeaturizerSpec(**_fields(FeaturizerSpec, obj.get("featurizer"), "featurizer."))
        if obj.get("data") is not None:
            top["data"] = DataSpec(**_fields(DataSpec, obj["data"], "data."))
        if obj.get("onnx") is not None:
            top["onnx"] = OnnxSpec(**_fields(OnnxSpec, obj["onnx"], "onnx."))
        spec = cls(**top)
        if spec.kind not in NGRAM_KINDS:
            raise ValueError(f"model kind {spec.kind!r} is not an n-gram model")
        if spec.representation not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {spec.representation!r}")
        f = spec.featurizer
        if not f.orders or any(not isinstance(n, int) or n < 1 for n in f.orders) or f.token_space < 2:
            raise ValueError(f"featurizer: orders {f.orders} and token_space {f.token_space} cannot count")
        return spec


_NESTED = {"model", "data", "onnx", "featurizer"}
_TYPES = {"str": str, "int": int, "bool": bool, "dict": dict, "list[str]": list, "list[int]": list}


def _fields(cls, obj, prefix: str) -> dict:
    """The dataclass's fields present in `obj`, type-checked (nested specs are left to the caller)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: not an object")
    out = {}
    for f in fields(cls):
        if f.name in _NESTED and not prefix:
            continue
        if f.name not in obj:
            if f.default is MISSING:
                raise ValueError(f"{prefix}{f.name}: missing")
            continue
        value = obj[f.name]
        wanted = _TYPES.get(str(f.type).split(" |")[0])
        if value is not None and wanted is not None and not isinstance(value, wanted):
            raise ValueError(f"{prefix}{f.name}: {type(value).__name__}, not {wanted.__name__}")
        out[f.name] = value
    return out


def read_spec(model_dir: Path) -> CheckpointSpec | NgramSpec:
    """The checked `config.json` of a model directory: a `NgramSpec` for the n-gram kinds, else a
    `CheckpointSpec`; SpecError (one line) when it is not one."""
    root = Path(model_dir)
    if not root.is_dir():
        raise SpecError(f"{root}: no such model directory")
    try:
        raw = json.loads((root / CONFIG).read_text())
    except FileNotFoundError:
        raise SpecError(f"{root}: not a runtrace model ({CONFIG} missing)") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"{root}: unreadable model ({one_line(e)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME or raw.get("version") != FORMAT_VERSION:
        got = raw if isinstance(raw, dict) else {}
        raise SpecError(f"{root}: unsupported model format {got.get('format')} v{got.get('version')}")
    try:
        return (NgramSpec if raw.get("kind") in NGRAM_KINDS else CheckpointSpec).from_json(raw)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{root}/{CONFIG}: {one_line(e)}") from None


def model_files(spec: CheckpointSpec | NgramSpec) -> list[str]:
    """The files of a model directory of this kind that training and export write, the scanner reads or
    a reader needs to know how it was made (`make install-default-model` ships them; calibration and the
    similarity index are the scanner's own, beside them)."""
    if isinstance(spec, NgramSpec):
        return [CONFIG, VOCABULARY, NGRAM_WEIGHTS, *NGRAM_GRAPHS.values()]
    return [CONFIG, VOCABULARY, WEIGHTS, HISTORY, *GRAPHS.values()]


def block_rows(
    flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, max_block_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """The instruction rows the block encoder reads: (U, L) int64 ids taken from `flat` (block k is
    flat[starts[k] : starts[k] + sizes[k]]), -1 where a row is padding, and each row's length (>= 1).

    L is the longest block, capped at `max_block_tokens`.  A longer block keeps its first L - 1
    instructions and its *last* one: the control transfer that ends it says where execution goes.
    An empty block reads one padding step."""
    flat = np.asarray(flat, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    width = max(int(min(sizes.max(initial=1), max_block_tokens)), 1)
    lengths = np.minimum(sizes, width)
    steps = np.arange(width, dtype=np.int64)
    mask = steps[None, :] < lengths[:, None]
    rows = np.full(mask.shape, -1, dtype=np.int64)
    if mask.any():
        rows[mask] = flat[(starts[:, None] + steps[None, :])[mask]]
    long = sizes > width
    if long.any():
        rows[long, width - 1] = flat[starts[long] + sizes[long] - 1]
    return rows, np.maximum(lengths, 1)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]

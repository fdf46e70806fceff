"""A saved ISM/BSM LSTM run by ONNX Runtime: what `scan` and `serve` score and explain with.

The model directory's ONNX graphs (`runtrace.models.export` writes them from the torch model training
ran) are loaded from the directory itself, and only after their sha256 matches the one `config.json`
records, which in turn names the weights they came from.  The rest of the directory is JSON (the
format: `runtrace.models.spec`); torch is never imported.

Three graphs, one role each:
- items: the LSTM input vector of every distinct sequence item of a trace (an ISM token, a BSM block);
- windows: windows of input vectors -> window logits (and attention scores);
- gradient: the gradient of a weighted sum of those outputs w.r.t. the input vectors.
A window is a gather from the trace's table of item vectors, which is what makes occlusion cheap: a
masked item is the same table with one row replaced by `baseline_vector()`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.models.aggregation import aggregate_rows, file_gradient
from runtrace.models.spec import (
    GRAPHS,
    OOV,
    PAD,
    VOCABULARY,
    CheckpointSpec,
    SpecError,
    block_rows,
    one_line,
    read_spec,
)


class ModelError(ValueError):
    """A model directory that cannot be used (one-line message naming it)."""


@dataclass
class WindowOutputs:
    logits: np.ndarray  # (B,) float64
    scores: np.ndarray | None  # (B,) attention scores, float64


class OnnxModel:
    """An `IsmLstm` / `BsmLstm` checkpoint's exported graphs, for inference and attribution."""

    evidence_only = False  # masking a unit can move the score either way

    def __init__(
        self, spec: CheckpointSpec, vocabularies: dict, sessions: dict, path: str, weights_sha256: str
    ):
        self.spec = spec
        self.path = path
        self.weights_sha256 = weights_sha256
        self.kind = spec.kind
        self.representation = spec.representation
        data = spec.data_spec
        self.normalisation, self.api, self.max_tokens = data.normalisation, data.api, data.max_tokens
        self.api_args = data.api_args  # API calls followed by their argument-class tokens
        self.min_instructions = spec.min_instructions  # shorter traces were never in its training data
        self.tracer_versions = data.tracer_versions  # the tracer revisions of its training traces
        # The calibration's map from the aggregated score to the P a scan reports (`scan.calibration`);
        # set by the scanner, None: the score itself.
        self.probability_map = None
        self.window = dict(spec.window)
        self.aggregation = spec.aggregation
        self.insn_index = _vocabulary_index(vocabularies["instructions"])
        blocks = vocabularies.get("blocks")
        self.block_index = _vocabulary_index(blocks) if blocks else None
        if spec.model.block_id_embedding and self.block_index is None:
            raise ValueError("block-identity embedding without a block vocabulary")
        self._sessions = sessions
        self._inputs = {role: {i.name for i in s.get_inputs()} for role, s in sessions.items()}
        self._window_outputs = [o.name for o in sessions["windows"].get_outputs()]
        self.baseline = self._baseline()
        self.in_dim = self.baseline.shape[0]

    # --- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        root = Path(path)
        spec, vocabularies = read_exported(root, CheckpointSpec, "a sequence model", "graphs")
        sessions = {
            role: graph_session(root, name, role, spec.onnx.graphs.get(role)) for role, name in GRAPHS.items()
        }
        try:
            # The model's identity is the weights the graphs were exported from; the scanner never reads
            # the weights file itself (training and `runtrace export` do, and record its sha256).
            return cls(spec, vocabularies, sessions, str(root), spec.onnx.weights_sha256)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelError(f"{root}: inconsistent model files ({one_line(e)})") from None

    # --- sequence items -> LSTM input vectors ---------------------------------------------------------
    def insn_ids(self, tokens) -> list[int]:
        get = self.insn_index.get
        return [get(t, OOV) for t in tokens]

    def item_vectors(
        self, lexicon: list[str], block_contents: list[tuple[str, ...]] | None = None
    ) -> np.ndarray:
        """(len(lexicon), in_dim): the LSTM input vector of each item of an encoded trace.

        ISM: `lexicon` holds instruction / API tokens.  BSM: block keys, with each key's normalised
        instruction tokens in `block_contents` (what `runtrace.represent.encode_bsm` returns)."""
        if not lexicon:
            return np.zeros((0, self.in_dim), dtype=np.float32)
        if self.representation == "ism":
            return self._run("items", tokens=np.asarray(self.insn_ids(lexicon), dtype=np.int64))[0]
        block_ids = [self.block_index.get(k, OOV) for k in lexicon] if self.block_index is not None else None
        return self.block_vectors([self.insn_ids(c) for c in block_contents], block_ids)

    def block_vectors(self, insn_ids: list[list[int]], block_ids: list[int] | None) -> np.ndarray:
        """The block encoder over distinct blocks, given as instruction vocabulary ids."""
        sizes = np.fromiter((len(ids) for ids in insn_ids), dtype=np.int64, count=len(insn_ids))
        flat = np.fromiter((i for ids in insn_ids for i in ids), dtype=np.int64, count=int(sizes.sum()))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        rows, lengths = block_rows(flat, starts, sizes, self.spec.model.max_block_tokens)
        ids = np.zeros(len(insn_ids), np.int64) if block_ids is None else np.asarray(block_ids, np.int64)
        return self._run("items", insn=np.where(rows >= 0, rows, PAD), insn_lengths=lengths, block_ids=ids)[0]

    def _baseline(self) -> np.ndarray:
        """The input an item the model knows nothing about reads as: the OOV token (ISM), or a block of
        one OOV instruction with an OOV identity (BSM) — exactly what an empty window reads."""
        if self.representation == "ism":
            return self._run("items", tokens=np.array([OOV], dtype=np.int64))[0][0]
        return self.block_vectors([[OOV]], [OOV])[0]

    def baseline_vector(self) -> np.ndarray:
        return self.baseline.copy()

    @property
    def baseline_description(self) -> str:
        """What an occluded unit reads as, in words (docs/scan.md, "Explanations")."""
        if self.representation == "ism":
            return "the OOV token"
        return "a block of one OOV instruction, OOV identity"

    # --- windows -----------------------------------------------------------------------------------
    def window_outputs(self, x: np.ndarray, lengths: np.ndarray) -> WindowOutputs:
        """x (B, T, in_dim) input vectors, each row's real steps first; lengths (B,) >= 1."""
        out = dict(
            zip(
                self._window_outputs,
                self._run(
                    "windows", x=np.asarray(x, dtype=np.float32), lengths=np.asarray(lengths, np.int64)
                ),
                strict=True,
            )
        )
        scores = out.get("scores")
        return WindowOutputs(
            out["logits"].astype(np.float64), None if scores is None else scores.astype(np.float64)
        )

    def probability(self, outputs: WindowOutputs) -> float:
        scores = None if outputs.scores is None else outputs.scores[None, :]
        return float(self.file_probabilities(outputs.logits[None, :], scores)[0])

    def file_probabilities(self, logits: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        """P(malicious) of each row of window logits (and attention scores), (R, B) -> (R,): the
        aggregation, then the calibration's map.  Everything a scan reports goes through here."""
        p = aggregate_rows(logits, scores, self.aggregation)
        return p if self.probability_map is None else self.probability_map(p)

    def gradient(
        self, x: np.ndarray, lengths: np.ndarray, outputs: WindowOutputs, target: str = "probability"
    ) -> np.ndarray:
        """d target / d x, shape (B, T, in_dim), for the windows x whose outputs are `outputs`.

        target "probability": the file's P(malicious); "logit": the file's score before the final
        sigmoid(s) (`runtrace.models.aggregation.file_gradient`)."""
        d_logits, d_scores = file_gradient(outputs.logits, outputs.scores, self.aggregation, target)
        if d_scores is None:
            d_scores = np.zeros_like(d_logits)
        return self._run(
            "gradient",
            x=np.asarray(x, dtype=np.float32),
            lengths=np.asarray(lengths, dtype=np.int64),
            d_logits=d_logits.astype(np.float32),
            d_scores=d_scores.astype(np.float32),
        )[0]

    def _run(self, role: str, **feeds: np.ndarray) -> list[np.ndarray]:
        wanted = self._inputs[role]
        return self._sessions[role].run(None, {k: v for k, v in feeds.items() if k in wanted})


def read_exported(root: Path, spec_type: type, what: str, graphs: str):
    """A model directory's spec (of `spec_type`, else "not `what`") and its vocabulary, checked to be
    the one its ONNX `graphs` were exported with; ModelError (one line) for anything else."""
    try:
        spec = read_spec(root)
    except SpecError as e:
        raise ModelError(str(e)) from None
    if not isinstance(spec, spec_type):
        raise ModelError(f"{root}: a {spec.kind} model, not {what}")
    if spec.onnx is None:
        raise ModelError(f"{root}: no ONNX {graphs} recorded in config.json; run `runtrace export {root}`")
    try:
        raw = (root / VOCABULARY).read_bytes()
        vocabulary = json.loads(raw)
    except FileNotFoundError as e:
        raise ModelError(f"{root}: not a runtrace model ({Path(e.filename).name} missing)") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{root}: unreadable model ({one_line(e)})") from None
    if hashlib.sha256(raw).hexdigest() != spec.onnx.vocabulary_sha256:
        raise ModelError(
            f"{root}: the ONNX {graphs} {'was' if graphs == 'graph' else 'were'} exported with another "
            f"{VOCABULARY} than this one; run `runtrace export {root}`"
        )
    return spec, vocabulary


def graph_session(root: Path, name: str, role: str, expected_sha256: str | None):
    """An ONNX Runtime session for one of the model's graphs, read from the model directory by its fixed
    `name` (`runtrace.models.spec`) and checked against the recorded sha256 before ONNX Runtime sees a
    byte of it."""
    path = root / name
    if expected_sha256 is None:
        raise ModelError(f"{root}: config.json records no {role} graph; run `runtrace export {root}`")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{root}: {path.name} missing; run `runtrace export {root}`") from None
    except OSError as e:
        raise ModelError(f"{root}: cannot read {path.name} ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ModelError(
            f"{root}: {path.name} does not match the sha256 recorded in config.json; "
            f"run `runtrace export {root}` to write it again"
        )
    import onnxruntime as ort

    # Problems surface as exceptions, which become one-line errors; ONNX Runtime's own log lines would
    # add a second, differently worded report on stderr.
    ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    # The model's matrices are small: one thread per run (the service runs several scans at once).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    # The exporter already folded constants and removed dead nodes; ONNX Runtime's own rewrites made no
    # measurable difference to scoring or explanation time here, and cost about 10 ms of every scan's
    # start-up (measured on the default model, 2 cores).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        # From the bytes that were hashed, never from the path again (the file could change meanwhile);
        # a graph loaded from bytes cannot read tensors from other files (ONNX "external data").
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
        raise ModelError(f"{root}: {path.name} is not a graph ONNX Runtime can run ({one_line(e)})") from None


def _vocabulary_index(obj: dict) -> dict[str, int]:
    tokens = obj["tokens"]
    if not isinstance(tokens, list):
        raise ValueError("vocabulary tokens must be a list")
    return {t: i + 2 for i, t in enumerate(tokens)}

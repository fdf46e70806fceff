"""A saved ISM/BSM LSTM checkpoint, evaluated with numpy only.

Reads the directory `runtrace.models.checkpoint` writes (`config.json`, `vocabulary.json`,
`model.safetensors`) with `json` and `safetensors.numpy`; nothing in it can execute code, and torch is
never imported.  It reproduces `WindowNet` in evaluation mode (dropout off):

- ISM: token embedding -> (bi)LSTM -> pooling -> linear head (+ attention scorer);
- BSM: block encoder (instruction embeddings pooled by mean / max / width-3 convolution, a linear
  projection, plus the block-identity embedding, then tanh) -> (bi)LSTM -> pooling -> head;
- window logits -> file probability by the model's aggregation (mean, max or attention), as
  `runtrace.models.estimator.aggregate_windows`.

Every sequence item (an ISM token, a BSM block key) becomes one LSTM input vector (`item_vectors`);
windows are gathers from that table, which is also what makes occlusion cheap: a masked item is the
same table with one row replaced by `baseline_vector()`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtrace.scan.nplstm import LstmStack, LstmWeights, pool, pool_backward

PAD, OOV = 0, 1  # fixed ids of every runtrace Vocabulary
KINDS = {"ism-lstm": "ism", "bsm-lstm": "bsm"}
AGGREGATIONS = ("mean", "max", "attention")
WEIGHTS = "model.safetensors"


class ModelError(ValueError):
    """A model directory that cannot be used (one-line message naming it)."""


@dataclass
class WindowOutputs:
    logits: np.ndarray  # (B,) float64
    scores: np.ndarray | None  # (B,) attention scores, float64
    cache: tuple | None = None  # what `gradient` needs


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def aggregate(logits: np.ndarray, scores: np.ndarray | None, mode: str) -> float:
    """One file's P(malicious) from its windows' logits (float64, as the torch estimator does)."""
    logits = np.asarray(logits, dtype=np.float64)
    if mode == "max":
        return float(_sigmoid(logits).max())
    if mode == "attention" and scores is not None:
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        return float(_sigmoid((weights * logits).sum()))
    return float(_sigmoid(logits).mean())


def aggregate_rows(logits: np.ndarray, scores: np.ndarray | None, mode: str) -> np.ndarray:
    """`aggregate` for many variants of one file at once: logits (K, B) -> (K,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if mode == "max":
        return _sigmoid(logits).max(1)
    if mode == "attention" and scores is not None:
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        return _sigmoid((weights * logits).sum(1))
    return _sigmoid(logits).mean(1)


class NumpyLstmModel:
    """An `IsmLstm` / `BsmLstm` checkpoint for inference and attribution without torch."""

    def __init__(
        self,
        config: dict,
        vocabularies: dict,
        tensors: dict[str, np.ndarray],
        path: str = "",
        weights_sha256: str = "",
        dtype=np.float32,
    ) -> None:
        self.path = path
        self.weights_sha256 = weights_sha256
        self.dtype = np.dtype(dtype)
        self.config = config
        self.kind = config["kind"]
        if self.kind not in KINDS:
            raise ValueError(f"model kind {self.kind!r} is not an LSTM runtrace can scan with")
        self.representation = KINDS[self.kind]
        data = config.get("data") or {}
        self.normalisation = data.get("normalisation") or "registers"
        self.api = bool(data.get("api", True))
        self.max_tokens = data.get("max_tokens")  # a dataset built with --max-tokens cut its sequences
        self.window = dict(config["window"])
        self.aggregation = config["aggregation"]
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}")
        m = config["model"]
        self.model_config = m
        self.pooling = m["pooling"]
        self.insn_index = _vocabulary_index(vocabularies["instructions"])
        blocks = vocabularies.get("blocks")
        self.block_index = _vocabulary_index(blocks) if blocks else None

        def t(name: str) -> np.ndarray:
            return np.asarray(tensors[name], dtype=self.dtype)

        prefix = "body.lstm."
        if m["bidirectional"]:
            forward = [self._lstm(tensors, f"{prefix}forward_layers.{k}.", 0) for k in range(m["num_layers"])]
            backward = [
                self._lstm(tensors, f"{prefix}backward_layers.{k}.", 0) for k in range(m["num_layers"])
            ]
        else:
            forward = [self._lstm(tensors, f"{prefix}lstm.", k) for k in range(m["num_layers"])]
            backward = None
        self.lstm = LstmStack(forward, backward)
        self.head_w, self.head_b = t("body.head.weight")[0], float(tensors["body.head.bias"][0])
        self.attention = None
        if self.aggregation == "attention":
            self.attention = (t("attention.weight")[0], float(tensors["attention.bias"][0]))
        if self.representation == "ism":
            self.embed = t("body.embed.weight")
            self.in_dim = self.embed.shape[1]
        else:
            self.embed = t("body.blocks.embed.weight")
            self.block_encoder = m["block_encoder"]
            self.max_block_tokens = int(m["max_block_tokens"])
            if self.block_encoder == "conv":
                self.conv_w, self.conv_b = t("body.blocks.conv.weight"), t("body.blocks.conv.bias")
                self.in_dim = self.conv_w.shape[0]
            else:
                self.proj_w, self.proj_b = t("body.blocks.proj.weight"), t("body.blocks.proj.bias")
                self.in_dim = self.proj_w.shape[0]
            self.block_embed = t("body.blocks.block_ids.weight") if m["block_id_embedding"] else None
            if self.block_embed is not None and self.block_index is None:
                raise ValueError("block-identity embedding without a block vocabulary")
        if len(self.insn_index) + 2 != self.embed.shape[0]:
            raise ValueError(
                f"vocabulary has {len(self.insn_index) + 2} tokens, embedding {self.embed.shape[0]} rows"
            )

    def _lstm(self, tensors: dict, prefix: str, layer: int) -> LstmWeights:
        names = [f"{prefix}{w}_l{layer}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        return LstmWeights.from_torch(*(np.asarray(tensors[n]) for n in names), dtype=self.dtype)

    # --- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, dtype=np.float32) -> NumpyLstmModel:
        root = Path(path)
        if not root.is_dir():
            raise ModelError(f"{root}: no such model directory")
        try:
            config = json.loads((root / "config.json").read_text())
            vocabularies = json.loads((root / "vocabulary.json").read_text())
            raw = (root / WEIGHTS).read_bytes()
        except FileNotFoundError as e:
            raise ModelError(f"{root}: not a runtrace model ({Path(e.filename).name} missing)") from None
        except (OSError, ValueError) as e:
            raise ModelError(f"{root}: unreadable model ({_one_line(e)})") from None
        if config.get("format") != "runtrace-model" or config.get("version") != 1:
            raise ModelError(
                f"{root}: unsupported model format {config.get('format')} v{config.get('version')}"
            )
        from safetensors.numpy import load as load_safetensors

        try:
            tensors = load_safetensors(raw)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own types for damaged files
            raise ModelError(f"{root}/{WEIGHTS}: unreadable weights ({_one_line(e)})") from None
        try:
            return cls(config, vocabularies, tensors, str(root), hashlib.sha256(raw).hexdigest(), dtype)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelError(f"{root}: inconsistent model files ({_one_line(e)})") from None

    # --- sequence items -> LSTM input vectors ---------------------------------------------------------
    def insn_ids(self, tokens) -> list[int]:
        get = self.insn_index.get
        return [get(t, OOV) for t in tokens]

    def item_vectors(self, lexicon: list[str], block_contents: list[tuple[str, ...]] | None = None):
        """(len(lexicon), in_dim): the LSTM input vector of each item of an encoded trace.

        ISM: `lexicon` holds instruction / API tokens.  BSM: block keys, with each key's normalised
        instruction tokens in `block_contents` (what `runtrace.represent.encode_bsm` returns)."""
        if self.representation == "ism":
            return self.embed[np.asarray(self.insn_ids(lexicon), dtype=np.int64)]
        block_ids = [self.block_index.get(k, OOV) for k in lexicon] if self.block_index is not None else None
        return self.block_vectors([self.insn_ids(c) for c in block_contents], block_ids)

    def baseline_vector(self) -> np.ndarray:
        """The input an item the model knows nothing about reads as: the OOV token (ISM), or a block of
        one OOV instruction with an OOV identity (BSM) — exactly what an empty window reads."""
        if self.representation == "ism":
            return self.embed[OOV].copy()
        return self.block_vectors([[OOV]], [OOV] if self.block_embed is not None else None)[0]

    def block_vectors(self, insn_ids: list[list[int]], block_ids: list[int] | None) -> np.ndarray:
        """`BlockEncoder` over distinct blocks, given as instruction vocabulary ids."""
        count = len(insn_ids)
        if count == 0:
            return np.zeros((0, self.in_dim), dtype=self.dtype)
        sizes = np.fromiter((len(ids) for ids in insn_ids), dtype=np.int64, count=count)
        width = max(int(min(sizes.max(), self.max_block_tokens)), 1)
        matrix = np.full((count, width), PAD, dtype=np.int64)
        for row, ids in enumerate(insn_ids):
            head = ids[:width]
            matrix[row, : len(head)] = head
            if len(ids) > width:
                # Long blocks keep their head and their last instruction (the control transfer), as
                # `runtrace.models.batching.WindowEncoder` does.
                matrix[row, width - 1] = ids[-1]
        lengths = np.maximum(np.minimum(sizes, width), 1)
        x = self.embed[matrix]  # (U, L, E)
        mask = (np.arange(width)[None, :] < lengths[:, None])[:, :, None]
        if self.block_encoder == "conv":
            padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
            h = self.conv_b + sum(padded[:, k : k + width] @ self.conv_w[:, :, k].T for k in range(3))
            v = np.where(mask, np.maximum(h, 0), -np.inf).max(1)
        elif self.block_encoder == "max":
            v = np.where(mask, x, -np.inf).max(1) @ self.proj_w.T + self.proj_b
        else:
            v = ((x * mask).sum(1) / lengths[:, None].astype(self.dtype)) @ self.proj_w.T + self.proj_b
        if self.block_embed is not None:
            v = v + self.block_embed[np.asarray(block_ids, dtype=np.int64)]
        return np.tanh(v).astype(self.dtype)

    # --- windows -----------------------------------------------------------------------------------
    def window_outputs(self, x: np.ndarray, lengths: np.ndarray, keep: bool = False) -> WindowOutputs:
        """x (B, T, in_dim) input vectors, each row's real steps first; lengths (B,) >= 1."""
        lengths = np.asarray(lengths, dtype=np.int64)
        out, stack_cache = self.lstm.run(x, lengths, keep)
        outputs = self.head_outputs(out, lengths)
        if keep:
            outputs.cache = (lengths, out, stack_cache)
        return outputs

    def head_outputs(self, out: np.ndarray, lengths: np.ndarray) -> WindowOutputs:
        """Pooling, head and attention scorer over LSTM outputs (B, T, F)."""
        features = pool(out, lengths, self.pooling, self.lstm.bidirectional)
        logits = (features @ self.head_w + self.head_b).astype(np.float64)
        scores = None
        if self.attention is not None:
            scores = (features @ self.attention[0] + self.attention[1]).astype(np.float64)
        return WindowOutputs(logits, scores)

    def probability(self, outputs: WindowOutputs) -> float:
        return aggregate(outputs.logits, outputs.scores, self.aggregation)

    def gradient(self, outputs: WindowOutputs, target: str = "probability") -> np.ndarray:
        """d target / d x, shape (B, T, in_dim); needs `window_outputs(keep=True)`.

        target "probability": the file's P(malicious).  "logit": the file's score before the final
        sigmoid(s) — the mean of the window logits (mean aggregation), the top window's logit (max), the
        attention-pooled logit (attention) — which does not flatten out when P is close to 0 or 1."""
        if outputs.cache is None:
            raise ValueError("gradient needs the outputs of window_outputs(..., keep=True)")
        lengths, out, stack_cache = outputs.cache
        d_logits, d_scores = self._aggregation_gradient(outputs.logits, outputs.scores, target)
        d_features = d_logits[:, None] * self.head_w[None, :].astype(np.float64)
        if d_scores is not None:
            d_features = d_features + d_scores[:, None] * self.attention[0][None, :].astype(np.float64)
        d_out = pool_backward(
            out, lengths, self.pooling, self.lstm.bidirectional, d_features.astype(self.dtype)
        )
        return self.lstm.backward(lengths, stack_cache, d_out)

    def _aggregation_gradient(
        self, logits: np.ndarray, scores: np.ndarray | None, target: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if target not in ("probability", "logit"):
            raise ValueError(f"unknown gradient target {target!r}")
        p = _sigmoid(logits)
        slope = p * (1 - p) if target == "probability" else np.ones_like(p)
        if self.aggregation == "max":
            d = np.zeros_like(p)
            top = int(p.argmax())
            d[top] = slope[top]
            return d, None
        if self.aggregation == "attention" and scores is not None:
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            file_logit = float((weights * logits).sum())
            outer = (
                float(_sigmoid(file_logit) * (1 - _sigmoid(file_logit))) if target == "probability" else 1.0
            )
            return outer * weights, outer * weights * (logits - file_logit)
        return slope / len(p), None


def _vocabulary_index(obj: dict) -> dict[str, int]:
    tokens = obj["tokens"]
    if not isinstance(tokens, list):
        raise ValueError("vocabulary tokens must be a list")
    return {t: i + 2 for i, t in enumerate(tokens)}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]

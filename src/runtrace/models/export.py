"""A saved model (LSTM or transformer) as the ONNX graphs the scanner runs with ONNX Runtime
(docs/scan.md, "Inference").

`export_onnx(model_dir)` loads the checkpoint in `model_dir` (its safetensors weights, with torch) and
writes three graphs beside it, each exported by `torch.onnx.export` from the torch code training runs:

- `model.items.onnx` — sequence items to the sequence model's input vectors: `IsmLstmNet.items` (token
  ids -> the embedding) or `BsmLstmNet.items` / `BsmTransformerNet.items` (a block's instruction ids and
  identity -> the block encoder);
- `model.windows.onnx` — windows of input vectors to window logits and attention scores:
  `WindowNet.windows` (LSTM or transformer, pooling, head, scorer);
- `model.gradient.onnx` — the gradient of chosen window outputs w.r.t. the input vectors
  (`runtrace.models.gradient`), which the explanation ranks blocks with.

Split there because the scanner needs the item vectors themselves: a window is a gather from the file's
table of item vectors, and occlusion replaces one row of that table by the baseline item and reruns only
the windows it occurs in.  Batch, item and sequence axes are dynamic.  Each graph is checked against
torch on random inputs before it is written, and its sha256 is recorded in `config.json` (`onnx`)
together with the sha256 of the weights it came from; the scanner refuses graphs that do not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtrace.models.gradient import window_gradient
from runtrace.models.spec import CONFIG, GRAPHS, ONNX_OPSET, OOV, VOCABULARY, WEIGHTS, ExportError

# Largest difference allowed between a graph run by ONNX Runtime and the torch module it came from, on
# the random inputs of `_check` (float32 throughout; the LSTM kernels differ in summation order).
TOLERANCE = 1e-4


class _TokenItems(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body.items(tokens)


class _BlockItems(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(
        self, insn: torch.Tensor, insn_lengths: torch.Tensor, block_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.body.items(insn, insn_lengths, block_ids)


class _Windows(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        logits, scores = self.net.windows(x, lengths)
        return logits if scores is None else (logits, scores)


def _graphs(net: nn.Module, representation: str, rng: np.random.Generator) -> dict:
    """Per role: (module, example inputs by name, dynamic axes by input, output names, check inputs)."""
    body = net.body
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    if representation == "ism":
        vocab, dim = body.embed.num_embeddings, body.embed.embedding_dim
        items = (
            _TokenItems(body),
            {"tokens": _ids(rng, vocab, (5,))},
            {"tokens": {0: torch.export.Dim("items")}},
            ["vectors"],
            [{"tokens": _ids(rng, vocab, (n,))} for n in (1, 40)],
        )
    else:
        vocab = body.blocks.embed.num_embeddings
        blocks = body.blocks.block_ids.num_embeddings if body.blocks.block_ids is not None else 2
        dim = body.config.block_dim

        def block_inputs(u: int, width: int) -> dict:
            return {
                "insn": _ids(rng, vocab, (u, width)),
                "insn_lengths": torch.as_tensor(rng.integers(1, width + 1, size=u), dtype=torch.int64),
                "block_ids": _ids(rng, blocks, (u,)),
            }

        units, width = torch.export.Dim("blocks"), torch.export.Dim("instructions")
        items = (
            _BlockItems(body),
            block_inputs(4, 3),
            {"insn": {0: units, 1: width}, "insn_lengths": {0: units}, "block_ids": {0: units}},
            ["vectors"],
            [block_inputs(1, 1), block_inputs(30, 7)],
        )

    # A transformer has learned positions for windows up to its window length only.
    longest = getattr(body.config, "max_positions", None)

    def window_inputs(b: int, t: int, extra: bool) -> dict:
        t = min(t, longest) if longest else t
        lengths = rng.integers(1, t + 1, size=b)
        lengths[0] = t
        inputs = {
            "x": torch.as_tensor(rng.normal(size=(b, t, dim)), dtype=torch.float32),
            "lengths": torch.as_tensor(lengths, dtype=torch.int64),
        }
        if extra:
            inputs["d_logits"] = torch.as_tensor(rng.normal(size=b), dtype=torch.float32)
            inputs["d_scores"] = torch.as_tensor(rng.normal(size=b), dtype=torch.float32)
        return inputs

    window_axes = {"x": {0: batch, 1: steps}, "lengths": {0: batch}}
    scored = net.attention is not None
    return {
        "items": items,
        "windows": (
            _Windows(net),
            window_inputs(3, 6, False),
            window_axes,
            ["logits", "scores"] if scored else ["logits"],
            [window_inputs(1, 1, False), window_inputs(5, 37, False)],
        ),
        "gradient": (
            window_gradient(net),
            window_inputs(3, 6, True),
            {**window_axes, "d_logits": {0: batch}, "d_scores": {0: batch}},
            ["d_x"],
            [window_inputs(1, 1, True), window_inputs(5, 37, True)],
        ),
    }


def _ids(rng: np.random.Generator, vocab: int, shape: tuple) -> torch.Tensor:
    ids = rng.integers(OOV, max(vocab, OOV + 1), size=shape)
    return torch.as_tensor(ids, dtype=torch.int64)


def _export(module: nn.Module, inputs: dict, axes: dict, outputs: list[str]) -> bytes:
    # torch.export and the ONNX translator report every step and many internal deprecations on stdout,
    # stderr and the logging tree; a successful export says nothing, a failed one raises.
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            program = torch.onnx.export(
                module,
                tuple(inputs.values()),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=list(inputs),
                output_names=outputs,
                dynamic_shapes=tuple(axes.get(name, {}) for name in inputs),
                verbose=False,
            )
        finally:
            logging.disable(previous)
    return program.model_proto.SerializeToString()


def _check(role: str, graph: bytes, module: nn.Module, cases: list[dict]) -> float:
    """The largest difference between ONNX Runtime and torch over the check inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    worst = 0.0
    with torch.no_grad():
        for inputs in cases:
            expected = module(*inputs.values())
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in wanted})
            for e, g in zip(expected, got, strict=True):
                if e.shape != g.shape:
                    raise ExportError(f"{role} graph: output shape {g.shape}, torch {tuple(e.shape)}")
                worst = max(worst, float(np.abs(e.numpy() - g).max(initial=0.0)))
    return worst


def export_onnx(model_dir: str | os.PathLike, seed: int = 0) -> dict:
    """Write the model's ONNX graphs beside its weights and record them in its `config.json`; returns
    the `onnx` record written.  Raises CheckpointError for a directory that is not a model, ExportError
    when a graph cannot be exported or disagrees with torch."""
    from runtrace.models.estimator import LstmClassifier

    root = Path(model_dir)
    clf = LstmClassifier.load(root, device="cpu")
    net = clf.net_.eval()
    rng = np.random.default_rng(seed)
    graphs, hashes, differences = {}, {}, {}
    for role, (module, inputs, axes, outputs, cases) in _graphs(net, clf.representation, rng).items():
        module.eval()
        try:
            graph = _export(module, inputs, axes, outputs)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; one line for the user
            raise ExportError(
                f"{root}: cannot export the {role} graph ({type(e).__name__}: {_first_line(e)})"
            ) from None
        try:
            differences[role] = _check(role, graph, module, [inputs, *cases])
        except ExportError as e:
            raise ExportError(f"{root}: {e}") from None
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's own error types, when a graph cannot run
            raise ExportError(
                f"{root}: the exported {role} graph does not run in ONNX Runtime ({_first_line(e)})"
            ) from None
        if differences[role] > TOLERANCE:
            raise ExportError(
                f"{root}: the exported {role} graph differs from torch by {differences[role]:.2g} "
                f"(more than {TOLERANCE:g})"
            )
        graphs[role] = graph
    # Written only once every graph is exported and checked, so a failure leaves the directory as it was.
    for role, graph in graphs.items():
        _write_atomically(root / GRAPHS[role], graph)
        hashes[role] = hashlib.sha256(graph).hexdigest()
    record = {
        "opset": ONNX_OPSET,
        "exporter": f"torch {torch.__version__}",
        "weights_sha256": hashlib.sha256((root / WEIGHTS).read_bytes()).hexdigest(),
        "vocabulary_sha256": hashlib.sha256((root / VOCABULARY).read_bytes()).hexdigest(),
        "graphs": hashes,
        "max_difference_from_torch": {k: float(f"{v:.3g}") for k, v in differences.items()},
    }
    config = json.loads((root / CONFIG).read_text())
    config["onnx"] = record
    _write_atomically(root / CONFIG, json.dumps(config, indent=1, sort_keys=True).encode())
    return record


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:300]

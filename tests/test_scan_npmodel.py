"""The numpy forward (and backward) pass equals the torch model it was saved from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from runtrace.models.layers import pool_outputs
from runtrace.represent.dataset import build_dataset
from runtrace.represent.windows import WindowConfig
from runtrace.scan.npmodel import ModelError, NumpyLstmModel
from runtrace.scan.score import score_sequence
from runtrace.scan.sequence import encode_for_model
from runtrace.scan.synthetic import synthetic_trace
from runtrace.trace.model import Arch, StopReason, Trace, TraceMeta
from scan_support import random_model, tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _empty_trace() -> Trace:
    meta = TraceMeta("00" * 32, Arch.X86, "synthetic", StopReason.EMULATION_FAULT, "invalid fetch")
    return Trace(meta, [], np.zeros(0, np.uint32))


def _traces() -> list[Trace]:
    return [
        synthetic_trace(True, 101),
        synthetic_trace(False, 102, n_visits=400),
        synthetic_trace(True, 103, n_visits=20),  # shorter than a window
        synthetic_trace(False, 104, api_calls=0),
        _empty_trace(),
    ]


def numpy_probability(model: NumpyLstmModel, trace: Trace) -> float:
    seq = encode_for_model(
        trace, model.representation, model.normalisation, model.api, model.max_tokens, model.window
    )
    return score_sequence(model, seq).probability


CONFIGS = {
    "ism-mean": ("ism", {}),
    "ism-bi2-last-attention": (
        "ism",
        dict(bidirectional=True, num_layers=2, pooling="last", aggregation="attention"),
    ),
    "ism-uni2-max-max": ("ism", dict(num_layers=2, pooling="max", aggregation="max")),
    "ism-sliding": ("ism", dict(window=WindowConfig("sliding", length=40, stride=25))),
    "bsm-mean": ("bsm", {}),
    "bsm-conv-bi-max-attention": (
        "bsm",
        dict(block_encoder="conv", bidirectional=True, pooling="max", aggregation="attention"),
    ),
    "bsm-max-noids-last-max": (
        "bsm",
        dict(block_encoder="max", block_id_embedding=False, pooling="last", aggregation="max"),
    ),  # fmt: skip
    "bsm-truncated-blocks": ("bsm", dict(max_block_tokens=3, window=WindowConfig("first-n", length=100))),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_model_equals_torch_model(tmp_path: Path, name: str) -> None:
    representation, config = CONFIGS[name]
    clf = random_model(tmp_path / "m", representation, seed=len(name), **config)
    model = NumpyLstmModel.load(tmp_path / "m")
    traces = _traces()
    # One dataset for all: a dataset of the empty trace alone has an empty lexicon, which the torch
    # encoder cannot index (reported to the models' author); numpy handles it either way.
    data = build_dataset(traces, [0] * len(traces), representation=representation)
    expected = clf.predict_proba(data, np.arange(len(traces)))
    got = np.array([numpy_probability(model, trace) for trace in traces])
    np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
    assert np.ptp(got) > 1e-3  # the random model really does tell the traces apart


def test_window_logits_equal_torch_window_logits(tmp_path: Path) -> None:
    clf = random_model(tmp_path / "m", "bsm", seed=3, bidirectional=True, aggregation="attention")
    model = NumpyLstmModel.load(tmp_path / "m")
    trace = synthetic_trace(True, 7, n_visits=500)
    data = build_dataset([trace], [0], representation="bsm")
    logits, scores = clf.predict_window_logits(data, clf.windows(data, np.array([0])))
    seq = encode_for_model(trace, "bsm", model.normalisation, model.api, None, model.window)
    out = score_sequence(model, seq).outputs
    np.testing.assert_allclose(out.logits, logits, atol=1e-5)
    np.testing.assert_allclose(out.scores, scores, atol=1e-5)


def _torch_file_target(logits, scores, aggregation: str, target: str):
    if aggregation == "max":
        top = torch.argmax(logits)
        return torch.sigmoid(logits[top]) if target == "probability" else logits[top]
    if aggregation == "attention":
        file_logit = (torch.softmax(scores, 0) * logits).sum()
        return torch.sigmoid(file_logit) if target == "probability" else file_logit
    return torch.sigmoid(logits).mean() if target == "probability" else logits.mean()


@pytest.mark.parametrize(
    ("bidirectional", "layers", "pooling", "aggregation"),
    [
        (False, 1, "mean", "mean"),
        (True, 2, "last", "attention"),
        (False, 2, "max", "max"),
        (True, 1, "mean", "mean"),
    ],
)
@pytest.mark.parametrize("target", ["probability", "logit"])
def test_gradient_equals_torch_autograd(
    tmp_path: Path, bidirectional, layers, pooling, aggregation, target
) -> None:
    clf = random_model(tmp_path / "m", "ism", seed=5, bidirectional=bidirectional, num_layers=layers,
                       pooling=pooling, aggregation=aggregation)  # fmt: skip
    model = NumpyLstmModel.load(tmp_path / "m", dtype=np.float64)
    rng = np.random.default_rng(0)
    lengths = np.array([17, 9, 17, 3])
    x = rng.normal(size=(4, 17, model.in_dim)) * 0.8
    for b, n in enumerate(lengths):
        x[b, n:] = rng.normal(size=(17 - n, model.in_dim))  # padding must not matter
    body = clf.net.body.double()
    x_t = torch.tensor(x, requires_grad=True)
    lengths_t = torch.tensor(lengths)
    out = body.lstm(x_t, lengths_t, False)
    features = pool_outputs(out, lengths_t, pooling, bidirectional)
    logits = body.head(features).squeeze(-1)
    scores = clf.net.attention.double()(features).squeeze(-1) if aggregation == "attention" else None
    _torch_file_target(logits, scores, aggregation, target).backward()

    outputs = model.window_outputs(x, lengths, keep=True)
    np.testing.assert_allclose(outputs.logits, logits.detach().numpy(), atol=1e-9)
    gradient = model.gradient(outputs, target)
    np.testing.assert_allclose(gradient, x_t.grad.numpy(), atol=1e-9)
    for b, n in enumerate(lengths):
        assert not gradient[b, n:].any()  # padding steps get no gradient


def test_float32_window_outputs_stay_within_1e5_of_float64(tmp_path: Path) -> None:
    random_model(tmp_path / "m", "bsm", seed=9, num_layers=2)
    single = NumpyLstmModel.load(tmp_path / "m")
    double = NumpyLstmModel.load(tmp_path / "m", dtype=np.float64)
    for trace in _traces():
        assert abs(numpy_probability(single, trace) - numpy_probability(double, trace)) < 1e-5


def test_bad_model_directories_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model directory"):
        NumpyLstmModel.load(tmp_path / "absent")
    source = tiny_model_dir()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocabulary.json"):
        (broken / name).write_bytes((source / name).read_bytes())
    with pytest.raises(ModelError, match=r"model\.safetensors missing"):
        NumpyLstmModel.load(broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelError, match="unreadable weights") as info:
        NumpyLstmModel.load(broken)
    assert "\n" not in str(info.value)
    (broken / "config.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(ModelError, match="unsupported model format"):
        NumpyLstmModel.load(broken)


def test_scanning_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from runtrace.scan.npmodel import NumpyLstmModel\n"
        "from runtrace.scan.scanner import Scanner\n"
        "from runtrace.scan.calibration import read_calibration\n"
        "from runtrace.scan.synthetic import synthetic_trace\n"
        f"model = NumpyLstmModel.load({str(tiny_model_dir())!r})\n"
        f"scanner = Scanner(model, read_calibration({str(tiny_model_dir())!r}))\n"
        "result = scanner.analyse_trace(synthetic_trace(True, 1), 'x', None, 'trace')\n"
        "assert result.explanation.contributions\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr

"""The ONNX graphs `scan` runs agree with the torch model they were exported from, on real traces.

Reference: the torch model loaded from the same directory's safetensors weights (`LstmClassifier.load`),
scoring through the training code's own path (dataset, `WindowEncoder`, `WindowNet`).  Checked: file
probabilities, window logits and attention scores, and the gradient the explanation ranks blocks with
(against torch autograd through `WindowNet.windows`), for every sequence-model kind `scan` accepts (the
committed random-weight models under tests/fixtures/models/parity/, scripts/make_parity_models.py), on
real derived traces (the bundled demo traces, none of them among the traces the parity models'
vocabularies were fitted on). The bundled default is an n-gram model: test_ngram_model.py checks it
against its LightGBM model.

Tolerances: the constants below (float32 throughout; ONNX Runtime's LSTM kernel and torch's sum in
different orders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from runtrace.models.aggregation import file_gradient
from runtrace.models.estimator import LstmClassifier
from runtrace.represent.dataset import build_dataset
from runtrace.scan.onnxmodel import OnnxModel
from runtrace.scan.score import score_sequence, window_batch
from runtrace.scan.sequence import encode_for_model
from runtrace.trace.formats.native import load_trace
from scan_support import PARITY_MODELS

PROBABILITY_TOLERANCE = 1e-5  # absolute, on P(malicious) of a file
OUTPUT_TOLERANCE = 1e-5  # absolute, on window logits and attention scores
GRADIENT_TOLERANCE = (1e-4, 1e-5)  # (relative, absolute) on d(file logit)/d(input vectors)

DEMO = Path(__file__).resolve().parents[1] / "src" / "runtrace" / "data" / "demo"
# Real traces of both classes, short and long, none among the 16 the parity models were fitted on; the
# five the demo scans (two of them run for hundreds of thousands of instructions) come first.
N_TRACES = 9


def _real_traces() -> list[Path]:
    scanned = sorted((DEMO / "scan").glob("*.rtrace"))
    rows = pq.read_table(DEMO / "manifest.parquet").to_pylist()[16:]
    names = {p.name for p in scanned}
    others = [DEMO / "traces" / f"{r['sha256']}.rtrace" for r in rows if f"{r['sha256']}.rtrace" not in names]
    return (scanned + others[::9])[:N_TRACES]


@pytest.fixture(scope="module")
def traces():
    return [load_trace(p) for p in _real_traces()]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _models() -> list[Path]:
    return sorted(p for p in PARITY_MODELS.iterdir() if p.is_dir())


def _onnx_scores(model: OnnxModel, trace):
    seq = encode_for_model(trace, model.representation, model.normalisation, model.api, model.max_tokens,
                           model.window)  # fmt: skip
    return seq, score_sequence(model, seq)


def _compare(model_dir: Path, traces) -> dict:
    clf = LstmClassifier.load(model_dir, device="cpu")
    model = OnnxModel.load(model_dir)
    data = build_dataset(traces, [0] * len(traces), representation=clf.representation)
    idx = np.arange(len(traces))
    expected = clf.predict_proba(data, idx)
    windows = clf.windows(data, idx)
    logits, scores = clf.predict_window_logits(data, windows)
    got, worst = [], {"probability": 0.0, "logits": 0.0, "scores": 0.0}
    for i, trace in enumerate(traces):
        seq, score = _onnx_scores(model, trace)
        got.append(score.probability)
        mine = windows.file_index == i
        np.testing.assert_array_equal(seq.starts, windows.starts[mine])  # the same windows
        worst["logits"] = max(worst["logits"], np.abs(score.outputs.logits - logits[mine]).max())
        if scores is not None:
            worst["scores"] = max(worst["scores"], np.abs(score.outputs.scores - scores[mine]).max())
    worst["probability"] = float(np.abs(np.array(got) - expected).max())
    return {"expected": expected, "got": np.array(got), **worst}


@pytest.mark.parametrize("model_dir", _models(), ids=lambda p: p.name)
def test_onnx_graphs_score_real_traces_as_the_torch_model(model_dir: Path, traces) -> None:
    found = _compare(model_dir, traces)
    assert found["probability"] <= PROBABILITY_TOLERANCE, found
    assert found["logits"] <= OUTPUT_TOLERANCE and found["scores"] <= OUTPUT_TOLERANCE, found
    assert np.ptp(found["got"]) > 1e-3  # the random model really does tell the traces apart


@pytest.mark.parametrize("model_dir", _models(), ids=lambda p: p.name)
@pytest.mark.parametrize("target", ["logit", "probability"])
def test_onnx_gradient_equals_torch_autograd(model_dir: Path, target: str, traces) -> None:
    clf = LstmClassifier.load(model_dir, device="cpu")
    model = OnnxModel.load(model_dir)
    rng = np.random.default_rng(0)
    for trace in traces[:3]:
        seq, _ = _onnx_scores(model, trace)
        batch = window_batch(model, seq)
        # Max pooling has no gradient where two steps tie, and a loop that repeats one block makes exact
        # ties (the revision-19 demo traces do): torch and the graph then pick different subgradients,
        # both valid.  A perturbation far below the vectors' scale compares them where both are defined.
        x = (batch.vectors() + 1e-3 * rng.standard_normal(batch.vectors().shape)).astype(np.float32)
        outputs = model.window_outputs(x, batch.lengths)
        got = model.gradient(x, batch.lengths, outputs, target)

        x_t = torch.tensor(x, requires_grad=True)
        logits, scores = clf.net_.windows(x_t, torch.as_tensor(batch.lengths))
        d_logits, d_scores = file_gradient(outputs.logits, outputs.scores, model.aggregation, target)
        total = (torch.as_tensor(d_logits, dtype=torch.float32) * logits).sum()
        if scores is not None:
            total = total + (torch.as_tensor(d_scores, dtype=torch.float32) * scores).sum()
        total.backward()
        rtol, atol = GRADIENT_TOLERANCE
        np.testing.assert_allclose(got, x_t.grad.numpy(), rtol=rtol, atol=atol, err_msg=model_dir.name)
        padding = np.arange(x.shape[1])[None, :] >= batch.lengths[:, None]
        assert not got[padding].any()  # padding steps get no gradient
        assert np.abs(got).max() > 1e-6  # and the real steps do

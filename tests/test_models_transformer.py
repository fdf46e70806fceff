"""The BSM transformer (`runtrace.models.bsm_transformer`): padding never reaches a real output, the
hand-written gradient the explanation ranks blocks with is autograd's, and a trained one scores and
explains through ONNX Runtime as `scan` runs it, agreeing with torch.

(The committed random-weight transformers in tests/fixtures/models/parity/ go through the same parity
checks as the LSTMs in test_onnx_parity.py, on real traces.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtrace.models.bsm_transformer import BsmTransformerNet
from runtrace.models.estimator import BsmTransformer, LstmClassifier, WindowNet, make_classifier
from runtrace.models.gradient import TransformerGradient, window_gradient
from runtrace.models.hyperparameters import BsmTransformerConfig
from runtrace.models.layers import redraw_weights
from runtrace.represent.dataset import build_dataset
from runtrace.scan.explain import attribute
from runtrace.scan.onnxmodel import OnnxModel
from runtrace.scan.score import score_sequence
from runtrace.scan.sequence import encode_for_model
from runtrace.scan.synthetic import PLANTED_ADDRESS, synthetic_trace, train_tiny_model

# The exported graphs against torch, as test_onnx_parity.py bounds them (float32 throughout).
PROBABILITY_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = (1e-4, 1e-5)  # (relative, absolute)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _net(seed: int = 0, attention: bool = False, **config) -> WindowNet:
    settings = dict(insn_vocab_size=20, block_vocab_size=20, insn_embed_dim=6, block_dim=12, num_heads=3,
                    ff_dim=16, max_positions=24, dropout=0.0)  # fmt: skip
    net = WindowNet(BsmTransformerNet(BsmTransformerConfig(**{**settings, **config})), attention)
    redraw_weights(net, torch.Generator().manual_seed(seed), 0.6)
    return net.eval()


def _windows(batch: int, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    return torch.randn(batch, steps, 12, generator=g), lengths


def test_make_classifier_builds_the_kind_asked_for() -> None:
    assert isinstance(make_classifier("bsm", "bsm-transformer"), BsmTransformer)
    with pytest.raises(ValueError, match="bsm-transformer reads BSM"):
        make_classifier("ism", "bsm-transformer")


@pytest.mark.parametrize(
    ("settings", "message"),
    [(dict(block_dim=10, num_heads=4), "multiple of num_heads"), (dict(pooling="last"), "pooling")],
)
def test_settings_that_make_no_transformer_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BsmTransformerConfig(**settings)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_real_positions_never_see_the_padding(pooling: str) -> None:
    net = _net(pooling=pooling, attention=True)
    x, lengths = _windows(4, 9)
    with torch.no_grad():
        logits, scores = net.windows(x, lengths)
        # Longer padding, filled with noise instead of zeros: nothing a real position reads changes.
        noisy = torch.cat([x, 5 * torch.randn(4, 7, 12)], dim=1)
        noisy[torch.arange(16)[None, :] >= lengths[:, None]] = 3.0
        padded_logits, padded_scores = net.windows(noisy, lengths)
        alone = [net.windows(x[b : b + 1, : lengths[b]], lengths[b : b + 1])[0] for b in range(4)]
    torch.testing.assert_close(padded_logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(padded_scores, scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(alone), logits, rtol=0, atol=1e-5)


def test_a_window_longer_than_the_learned_positions_is_an_error() -> None:
    net = _net(max_positions=8)
    x, lengths = _windows(2, 9)
    with pytest.raises(IndexError):
        net.windows(x, lengths)


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_gradient_module_is_autograd(pooling: str, attention: bool, layers: int) -> None:
    net = _net(seed=layers, attention=attention, pooling=pooling, num_layers=layers)
    gradient = window_gradient(net)
    assert isinstance(gradient, TransformerGradient)
    x, lengths = _windows(5, 11, seed=3)
    d_logits, d_scores = torch.randn(5), torch.randn(5)
    x.requires_grad_(True)
    logits, scores = net.windows(x, lengths)
    total = (d_logits * logits).sum() + ((d_scores * scores).sum() if attention else 0.0)
    (expected,) = torch.autograd.grad(total, x)
    with torch.no_grad():
        got = gradient(x.detach(), lengths, d_logits, d_scores)
    rtol, atol = GRADIENT_TOLERANCE
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    padding = torch.arange(11)[None, :] >= lengths[:, None]
    assert not got[padding].any() and got[~padding].abs().max() > 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, LstmClassifier]:
    """A small transformer trained on the synthetic task (a planted block = malicious), with its graphs."""
    out = tmp_path_factory.mktemp("transformer") / "model"
    return out, train_tiny_model(out, kind="bsm-transformer", epochs=8, seed=0)


@pytest.mark.slow  # training and exporting the model take about 20 s
def test_scan_scores_a_trained_transformer_as_torch_does(trained) -> None:
    model_dir, clf = trained
    model = OnnxModel.load(model_dir)
    assert model.kind == "bsm-transformer" and model.representation == "bsm"
    assert LstmClassifier.load(model_dir).config_.model.max_positions == clf.config_.window.length
    traces = [synthetic_trace(bool(seed % 2), seed) for seed in range(700, 712)]  # never trained on
    expected = clf.predict_proba(build_dataset(traces, [0] * 12, representation="bsm"), np.arange(12))
    got = []
    for trace in traces:
        seq = encode_for_model(trace, "bsm", model.normalisation, model.api, model.max_tokens, model.window)
        got.append(score_sequence(model, seq).probability)
    np.testing.assert_allclose(got, expected, rtol=0, atol=PROBABILITY_TOLERANCE)
    # It learned the task: every malicious trace above every benign one.
    got = np.array(got)
    assert got[1::2].min() > got[0::2].max(), got


@pytest.mark.slow
def test_occlusion_finds_the_planted_block_with_a_transformer(trained) -> None:
    model = OnnxModel.load(trained[0])
    trace = synthetic_trace(True, 721)
    seq = encode_for_model(trace, "bsm", model.normalisation, model.api, model.max_tokens, model.window)
    units = attribute(model, trace, seq, score_sequence(model, seq), candidates=32).units
    assert units[0].kind == "block" and trace.blocks[units[0].block_id].address == PLANTED_ADDRESS

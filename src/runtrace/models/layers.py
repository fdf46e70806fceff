"""Pieces both LSTM models share: running an LSTM over a padded batch, pooling its outputs, and
pooling window scores into file scores."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from runtrace.models.spec import POOLINGS


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first lengths[b] steps in place, leaving the padding where it is.
    Its own inverse."""
    steps = torch.arange(x.size(1), device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    # expand(-1, -1, F), not expand_as(x): the ONNX exporter can read a recurrent output's length as the
    # example's, and the window length must stay a free axis of the exported graph.
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def _run_packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out


class SequenceLstm(nn.Module):
    """A batch-first (bi)LSTM over padded batches whose outputs at real positions never depend on the
    padding, whichever way it runs:

    - packed (`pack_padded_sequence`): no work on padding at all.  Fast with cuDNN; on CPU, PyTorch's
      packed LSTM leaves the fused oneDNN kernel and runs ~40x slower (see benchmarks/models_bench.py).
    - padded: one fused call over the padded tensor.  Exact because an LSTM reads left to right, so
      the padding comes after every real step; the backward direction of a bidirectional LSTM reads each
      row reversed *within its length* (`reverse_padded`), so its padding also comes last.

    With length bucketing the padding is a few percent, so on CPU the padded path wins by far.
    Bidirectional layers are kept as separate forward/backward LSTMs so both paths share weights.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
    ):
        super().__init__()
        self.bidirectional = bidirectional
        self.dropout = nn.Dropout(dropout if num_layers > 1 else 0.0)
        if bidirectional:
            sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
            self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
            self.backward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        else:
            self.lstm = nn.LSTM(
                input_size,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, pack: bool | None = None) -> torch.Tensor:
        """x (B, T, E), lengths (B,) >= 1 -> outputs (B, T, H·directions); pack None: on CUDA only."""
        if pack is None:
            pack = x.is_cuda

        def run(lstm: nn.LSTM, inputs: torch.Tensor) -> torch.Tensor:
            return _run_packed(lstm, inputs, lengths) if pack else lstm(inputs)[0]

        if not self.bidirectional:
            return run(self.lstm, x)
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            if i:
                x = self.dropout(x)
            backward = reverse_padded(run(bwd, reverse_padded(x, lengths)), lengths)
            x = torch.cat([run(fwd, x), backward], dim=-1)
        return x


def pool_outputs(out: torch.Tensor, lengths: torch.Tensor, mode: str, bidirectional: bool) -> torch.Tensor:
    """(B, T, F) LSTM outputs -> (B, F), looking only at the first lengths[b] positions of row b."""
    batch, steps, features = out.shape
    lengths = lengths.to(out.device)
    if mode == "last":
        rows = torch.arange(batch, device=out.device)
        if not bidirectional:
            return out[rows, lengths - 1]
        # The forward direction ends at the last real position, the backward one at position 0.
        half = features // 2
        return torch.cat([out[rows, lengths - 1, :half], out[:, 0, half:]], dim=1)
    mask = (torch.arange(steps, device=out.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    if mode == "mean":
        return (out * mask).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(out.dtype)
    if mode == "max":
        return out.masked_fill(~mask, float("-inf")).max(1).values
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {mode!r}")


def attention_pool(
    logits: torch.Tensor, scores: torch.Tensor, segments: torch.Tensor, n_segments: int
) -> torch.Tensor:
    """File logits as an attention-weighted sum of window logits: softmax of `scores` within each segment
    (a segment = the windows of one file).  Vectorised with scatter ops, so one batch may hold many files.
    """
    top = torch.full((n_segments,), float("-inf"), device=scores.device, dtype=scores.dtype)
    top = top.scatter_reduce(0, segments, scores, reduce="amax", include_self=True)
    weights = torch.exp(scores - top[segments])
    denom = torch.zeros(n_segments, device=scores.device, dtype=scores.dtype).index_add(0, segments, weights)
    weights = weights / denom[segments]
    return torch.zeros(n_segments, device=logits.device, dtype=logits.dtype).index_add(
        0, segments, weights * logits
    )


@torch.no_grad()
def redraw_weights(net: nn.Module, generator: torch.Generator, scale: float) -> None:
    """Draw every parameter again from N(0, scale^2), in `net.parameters()` order, keeping the padding
    rows of embeddings at zero (where training leaves them): a random network exercises more of the
    arithmetic than a trained one, for tests that compare implementations."""
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * scale)
    for module in net.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx] = 0.0

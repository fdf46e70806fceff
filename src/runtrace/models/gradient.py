"""The gradient of a window model's outputs with respect to its input vectors, as a module torch can
export to ONNX: what the scanner's explanation ranks blocks with (docs/scan.md, "Explanations").

`WindowGradient(net)(x, lengths, d_logits, d_scores)` is the vector-Jacobian product of
`WindowNet.windows`: d(sum_b d_logits[b] * logit[b] + d_scores[b] * score[b]) / dx.

Why it is written out instead of taken from autograd: the scanner runs ONNX graphs, and neither of
torch's exporters can export a backward pass (`torch.autograd.grad` inside an exported forward fails,
and autograd through `nn.LSTM` needs a fixed number of steps, which the windows do not have).  So the
LSTM's backward is stated here as loops over time (`scan`, exported as ONNX `Scan`): a forward loop that
keeps each step's gates and cell state, and a reversed loop with the LSTM's gradient equations.  The
rest of the network (pooling, head, attention scorer) is linear or elementwise and its backward is a
few lines.  `tests/test_models_export.py` checks the result against torch autograd through the very
`WindowNet` it mirrors, for every layer, direction and pooling the models have.

The transformer (`BsmTransformerNet`) has no loop over time; `TransformerGradient` states its backward
(LayerNorm, softmax attention, the GELU feed-forward sublayer) the same way, checked the same way.
`window_gradient(net)` picks the one a network needs.

Layout: PyTorch's gate order (i, f, g, o); batch-first inputs; padding after each row's real steps, as
`SequenceLstm`'s padded path runs, so padding never reaches a real output and gets no gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch._higher_order_ops.scan import scan

from runtrace.models.bsm_transformer import (
    BsmTransformerNet,
    attention_weights,
    gelu,
    merge_heads,
    padding_bias,
    split_heads,
)
from runtrace.models.layers import reverse_padded


def _weights(lstm: nn.LSTM, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_ih, W_hh, b_ih + b_hh) of one layer of a torch LSTM, detached."""

    def get(name: str) -> torch.Tensor:
        return getattr(lstm, f"{name}_l{layer}").detach().clone()

    return get("weight_ih"), get("weight_hh"), get("bias_ih") + get("bias_hh")


def lstm_forward(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T, I) -> outputs (B, T, H), and per step (time first) the gate activations (T, B, 4H) and
    cell states (T, B, H).  Zero initial state, as `nn.LSTM`."""
    hidden = w_hh.shape[1]
    pre = x.transpose(0, 1) @ w_ih.T + bias  # the input half of every step at once
    zeros = pre.new_zeros(pre.shape[1], hidden)

    def step(carry, p):
        h, c = carry
        i, f, g, o = (p + h @ w_hh.T).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c.clone()), (torch.cat([i, f, g, o], dim=-1), c.clone(), h.clone())

    _, (gates, cells, outputs) = scan(step, (zeros, zeros.clone()), pre)
    return outputs.transpose(0, 1), gates, cells


def lstm_backward(
    d_out: torch.Tensor, gates: torch.Tensor, cells: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor
) -> torch.Tensor:
    """Gradient w.r.t. the inputs (B, T, I) given the gradient of the outputs (B, T, H) and what
    `lstm_forward` kept."""
    zeros = cells.new_zeros(cells.shape[1:])
    previous_cells = torch.cat([zeros[None], cells[:-1]], dim=0)

    def step(carry, xs):
        dh_next, dc_next = carry
        gate, c, c_prev, d_h = xs
        i, f, g, o = gate.chunk(4, dim=-1)
        tanh_c = torch.tanh(c)
        dh = d_h + dh_next
        dc = dh * o * (1 - tanh_c * tanh_c) + dc_next
        d_pre = torch.cat(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g * g),
                dh * tanh_c * o * (1 - o),
            ],
            dim=-1,
        )
        return (d_pre @ w_hh, (dc * f).clone()), d_pre.clone()

    _, d_pre = scan(
        step, (zeros, zeros.clone()), (gates, cells, previous_cells, d_out.transpose(0, 1)), reverse=True
    )
    return (d_pre @ w_ih).transpose(0, 1)


def pool_backward(
    out: torch.Tensor, lengths: torch.Tensor, mode: str, bidirectional: bool, d_features: torch.Tensor
) -> torch.Tensor:
    """Gradient of the LSTM outputs (B, T, F) given that of the pooled features (B, F), as
    `layers.pool_outputs` pools them."""
    steps = torch.arange(out.shape[1], device=out.device)
    real = steps[None, :] < lengths[:, None]  # (B, T)
    if mode == "mean":
        scale = d_features / lengths.clamp(min=1)[:, None].to(out.dtype)
        return real[:, :, None].to(out.dtype) * scale[:, None, :]
    if mode == "max":
        top = out.masked_fill(~real[:, :, None], float("-inf")).argmax(dim=1)  # (B, F)
        return (steps[None, :, None] == top[:, None, :]).to(out.dtype) * d_features[:, None, :]
    if mode == "last":
        last = (steps[None, :] == (lengths - 1)[:, None]).to(out.dtype)[:, :, None]
        if not bidirectional:
            return last * d_features[:, None, :]
        # The forward direction ends at the last real step, the backward one at step 0.
        half = out.shape[2] // 2
        first = (steps == 0).to(out.dtype)[None, :, None]
        return torch.cat([last * d_features[:, None, :half], first * d_features[:, None, half:]], dim=-1)
    raise ValueError(f"unknown pooling {mode!r}")


class WindowGradient(nn.Module):
    """The vector-Jacobian product of `net.windows` (a fitted `WindowNet`), in evaluation mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        config = net.body.config
        lstm = net.body.lstm
        self.pooling, self.bidirectional = config.pooling, config.bidirectional
        if self.bidirectional:
            forward = [_weights(layer, 0) for layer in lstm.forward_layers]
            backward = [_weights(layer, 0) for layer in lstm.backward_layers]
        else:
            forward = [_weights(lstm.lstm, k) for k in range(config.num_layers)]
            backward = []
        self.forward_weights = nn.ParameterList(
            nn.Parameter(w, requires_grad=False) for ws in forward for w in ws
        )
        self.backward_weights = nn.ParameterList(
            nn.Parameter(w, requires_grad=False) for ws in backward for w in ws
        )
        self.layers = len(forward)
        self.head = nn.Parameter(net.body.head.weight.detach()[0].clone(), requires_grad=False)
        attention = net.attention.weight.detach()[0].clone() if net.attention is not None else None
        self.attention = nn.Parameter(attention, requires_grad=False) if attention is not None else None

    def _layer(self, weights: nn.ParameterList, k: int) -> tuple[torch.Tensor, ...]:
        return tuple(weights[3 * k + j] for j in range(3))

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, d_logits: torch.Tensor, d_scores: torch.Tensor
    ) -> torch.Tensor:
        """x (B, T, D) float32, lengths (B,) int64 >= 1, d_logits and d_scores (B,) float32 -> (B, T, D).
        `d_scores` is read only by models with an attention scorer."""
        kept = []
        h = x
        for k in range(self.layers):
            w_ih, w_hh, bias = self._layer(self.forward_weights, k)
            out, gates, cells = lstm_forward(h, w_ih, w_hh, bias)
            if self.bidirectional:
                wb_ih, wb_hh, b_bias = self._layer(self.backward_weights, k)
                out_b, gates_b, cells_b = lstm_forward(reverse_padded(h, lengths), wb_ih, wb_hh, b_bias)
                kept.append((gates, cells, gates_b, cells_b))
                h = torch.cat([out, reverse_padded(out_b, lengths)], dim=-1)
            else:
                kept.append((gates, cells))
                h = out
        d_features = d_logits[:, None] * self.head[None, :]
        if self.attention is not None:
            d_features = d_features + d_scores[:, None] * self.attention[None, :]
        d = pool_backward(h, lengths, self.pooling, self.bidirectional, d_features)
        for k in range(self.layers - 1, -1, -1):
            w_ih, w_hh, _ = self._layer(self.forward_weights, k)
            if self.bidirectional:
                gates, cells, gates_b, cells_b = kept[k]
                hidden = w_hh.shape[1]
                wb_ih, wb_hh, _ = self._layer(self.backward_weights, k)
                d_backward = lstm_backward(
                    reverse_padded(d[..., hidden:], lengths), gates_b, cells_b, wb_ih, wb_hh
                )
                d = lstm_backward(d[..., :hidden], gates, cells, w_ih, w_hh) + reverse_padded(
                    d_backward, lengths
                )
            else:
                gates, cells = kept[k]
                d = lstm_backward(d, gates, cells, w_ih, w_hh)
        return d


# --- the transformer (runtrace.models.bsm_transformer) ------------------------------------------------
# No loop over time here: the layers are stated once, forward keeping what the backward needs, backward
# with the standard gradients of LayerNorm, softmax attention and the GELU feed-forward sublayer.
# Dropout is the identity in evaluation mode, and the learned positions are added, so the gradient
# w.r.t. the block vectors is the gradient w.r.t. the sum.


def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """`norm(x)`, and the normalised input and reciprocal deviation its backward reads."""
    centred = x - x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + norm.eps)
    normalised = centred * rstd
    return normalised * norm.weight + norm.bias, (normalised, rstd)


def _norm_backward(
    norm: nn.LayerNorm, kept: tuple[torch.Tensor, torch.Tensor], d_y: torch.Tensor
) -> torch.Tensor:
    normalised, rstd = kept
    g = d_y * norm.weight
    mean_g = g.mean(dim=-1, keepdim=True)
    return rstd * (g - mean_g - normalised * (g * normalised).mean(dim=-1, keepdim=True))


def _gelu_derivative(u: torch.Tensor) -> torch.Tensor:
    """d/du of the exact GELU u * Phi(u): Phi(u) + u * phi(u)."""
    cdf = 0.5 * (1.0 + torch.erf(u * 0.5**0.5))
    pdf = torch.exp(-0.5 * u * u) * (2.0 * torch.pi) ** -0.5
    return cdf + u * pdf


class TransformerGradient(nn.Module):
    """The vector-Jacobian product of `net.windows` for a `BsmTransformerNet` body, in evaluation mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.body = net.body
        self.scorer = net.attention

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, d_logits: torch.Tensor, d_scores: torch.Tensor
    ) -> torch.Tensor:
        """As `WindowGradient.forward`: (B, T, D) d(weighted outputs) / dx."""
        body = self.body
        steps = torch.arange(x.shape[1], device=x.device)
        bias = padding_bias(steps[None, :] < lengths[:, None])
        h = x + body.positions(steps)
        kept = []
        for layer in body.layers:
            a, norm1 = _norm(layer.norm1, h)
            q, k, v = split_heads(layer.attention.qkv(a), layer.attention.heads)
            p = attention_weights(q, k, bias)
            h = h + layer.attention.out(merge_heads(p @ v))
            c, norm2 = _norm(layer.norm2, h)
            u = layer.ff1(c)
            h = h + layer.ff2(gelu(u))
            kept.append((norm1, q, k, v, p, norm2, u))
        z, final = _norm(body.norm, h)

        d_features = d_logits[:, None] * body.head.weight[0][None, :]
        if self.scorer is not None:
            d_features = d_features + d_scores[:, None] * self.scorer.weight[0][None, :]
        d = pool_backward(z, lengths, body.config.pooling, False, d_features)
        d = _norm_backward(body.norm, final, d)
        for layer, (norm1, q, k, v, p, norm2, u) in zip(reversed(body.layers), reversed(kept), strict=True):
            # h = h1 + ff2(gelu(ff1(norm2(h1))))
            d_u = (d @ layer.ff2.weight) * _gelu_derivative(u)
            d = d + _norm_backward(layer.norm2, norm2, d_u @ layer.ff1.weight)
            # h1 = h0 + out(merge(softmax(q k^T / sqrt(w)) v)), q k v = split(qkv(norm1(h0)))
            heads = layer.attention.heads
            d_o = (d @ layer.attention.out.weight).unflatten(-1, (heads, -1)).transpose(1, 2)
            d_p = d_o @ v.transpose(-1, -2)
            d_v = p.transpose(-1, -2) @ d_o
            d_s = p * (d_p - (d_p * p).sum(dim=-1, keepdim=True)) * q.shape[-1] ** -0.5
            d_qkv = torch.cat(
                [merge_heads(d_s @ k), merge_heads(d_s.transpose(-1, -2) @ q), merge_heads(d_v)], -1
            )
            d = d + _norm_backward(layer.norm1, norm1, d_qkv @ layer.attention.qkv.weight)
        return d


def window_gradient(net: nn.Module) -> nn.Module:
    """The gradient module of a fitted `WindowNet`, whichever sequence model its body is."""
    return TransformerGradient(net) if isinstance(net.body, BsmTransformerNet) else WindowGradient(net)

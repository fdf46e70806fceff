"""The LSTM arithmetic of `runtrace.models` in plain numpy: forward and backward, no torch.

`runtrace scan` must answer in about a second, and `import torch` alone takes about that long, so
inference re-implements the few operations the saved networks use.  The layout follows PyTorch exactly
(gate order i, f, g, o; `h = o * tanh(c)`; batch first), so a checkpoint's tensors are used as they are;
tests compare every output with the torch model.

The backward pass exists for explanations: the gradient of a file's score with respect to the LSTM's
input vectors ranks which blocks to occlude exactly (see `runtrace.scan.explain`).

Padding convention, as in `runtrace.models.layers.SequenceLstm`'s padded path: each row's real steps come
first and the padding after them, so an LSTM reading left to right never lets padding reach a real
output; the backward direction of a bidirectional layer reads each row reversed *within its length*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LstmWeights:
    """One direction of one layer, with its gates reordered (i, f, o | g) and the sigmoid gates' rows
    scaled by 1/2, so one `tanh` call computes all four activations: sigmoid(x) = (1 + tanh(x/2)) / 2.
    Scaling by a power of two is exact in floating point."""

    w_ih_t: np.ndarray  # (in, 4H), transposed for x @ w
    w_hh_t: np.ndarray  # (H, 4H)
    bias: np.ndarray  # (4H,)
    hidden: int

    @classmethod
    def from_torch(
        cls, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray, dtype
    ) -> LstmWeights:
        hidden = w_hh.shape[1]
        i, f, g, o = (slice(k * hidden, (k + 1) * hidden) for k in range(4))
        order = np.r_[i, f, o, g]
        scale = np.ones(4 * hidden)
        scale[: 3 * hidden] = 0.5

        def prepare(m: np.ndarray) -> np.ndarray:
            return (m.astype(np.float64)[order] * scale.reshape((-1,) + (1,) * (m.ndim - 1))).astype(dtype)

        return cls(
            np.ascontiguousarray(prepare(w_ih).T),
            np.ascontiguousarray(prepare(w_hh).T),
            prepare(b_ih.astype(np.float64) + b_hh.astype(np.float64)),
            hidden,
        )


@dataclass
class LstmCache:
    """What the backward pass (and resuming from a step) needs from a forward pass of one direction."""

    gates: np.ndarray  # (B, T, 4H) activations: sigmoid i, f, o, then tanh g
    cells: np.ndarray  # (B, T, H) cell state after each step
    outputs: np.ndarray  # (B, T, H)
    pre: np.ndarray  # (B, T, 4H) the input half of each step (scaled gate layout)


def run_lstm(x: np.ndarray, w: LstmWeights, keep: bool = False) -> tuple[np.ndarray, LstmCache | None]:
    """x (B, T, in) -> outputs (B, T, H); zero initial state, as torch."""
    batch, steps, _ = x.shape
    hid = w.hidden
    pre = x @ w.w_ih_t + w.bias  # the input half of every step at once
    h = np.zeros((batch, hid), dtype=x.dtype)
    c = np.zeros((batch, hid), dtype=x.dtype)
    out = np.empty((batch, steps, hid), dtype=x.dtype)
    gates = np.empty((batch, steps, 4 * hid), dtype=x.dtype) if keep else None
    cells = np.empty((batch, steps, hid), dtype=x.dtype) if keep else None
    for t in range(steps):
        a = np.tanh(pre[:, t] + h @ w.w_hh_t)
        sig = a[:, : 3 * hid]
        sig *= 0.5
        sig += 0.5
        c = sig[:, hid : 2 * hid] * c + sig[:, :hid] * a[:, 3 * hid :]
        h = sig[:, 2 * hid : 3 * hid] * np.tanh(c)
        out[:, t] = h
        if keep:
            gates[:, t] = a
            cells[:, t] = c
    return out, (LstmCache(gates, cells, out, pre) if keep else None)


def resume_lstm(pre: np.ndarray, w: LstmWeights, start: np.ndarray, h0: np.ndarray, c0: np.ndarray):
    """Run rows from step start[r] on, from the state (h0[r], c0[r]) the row had after step start[r]-1.

    `pre` holds the rows' input halves (R, T, 4H); rows must be sorted by `start`, so the rows running
    at step t are a prefix of the batch.  An LSTM reads left to right: a change at step t0 cannot alter
    any output before t0, so occluding a block only needs the steps from its first occurrence.
    Outputs before each row's start are left at zero."""
    rows, steps, _ = pre.shape
    hid = w.hidden
    out = np.zeros((rows, steps, hid), dtype=pre.dtype)
    if rows == 0:
        return out
    running = np.searchsorted(start, np.arange(steps), side="right")  # rows started by step t
    h, c = h0.astype(pre.dtype, copy=True), c0.astype(pre.dtype, copy=True)
    for t in range(int(start[0]), steps):
        k = running[t]
        a = np.tanh(pre[:k, t] + h[:k] @ w.w_hh_t)
        sig = a[:, : 3 * hid]
        sig *= 0.5
        sig += 0.5
        c[:k] = sig[:, hid : 2 * hid] * c[:k] + sig[:, :hid] * a[:, 3 * hid :]
        h[:k] = sig[:, 2 * hid : 3 * hid] * np.tanh(c[:k])
        out[:k, t] = h[:k]
    return out


def lstm_backward(x: np.ndarray, w: LstmWeights, cache: LstmCache, d_out: np.ndarray) -> np.ndarray:
    """Gradient with respect to x (B, T, in), given the gradient of the outputs (B, T, H)."""
    batch, steps, _ = x.shape
    hid = w.hidden
    d_pre = np.empty((batch, steps, 4 * hid), dtype=x.dtype)
    dh_next = np.zeros((batch, hid), dtype=x.dtype)
    dc_next = np.zeros((batch, hid), dtype=x.dtype)
    # The recurrent weights in their torch scale: the stored ones are halved for the sigmoid gates.
    unscale = np.ones(4 * hid, dtype=x.dtype)
    unscale[: 3 * hid] = 2.0
    w_hh = (w.w_hh_t * unscale).T  # (4H, H)
    w_ih = (w.w_ih_t * unscale).T  # (4H, in)
    zeros = np.zeros((batch, hid), dtype=x.dtype)
    for t in range(steps - 1, -1, -1):
        a = cache.gates[:, t]
        i, f, o, g = a[:, :hid], a[:, hid : 2 * hid], a[:, 2 * hid : 3 * hid], a[:, 3 * hid :]
        c = cache.cells[:, t]
        c_prev = cache.cells[:, t - 1] if t else zeros
        tc = np.tanh(c)
        dh = d_out[:, t] + dh_next
        dc = dh * o * (1.0 - tc * tc) + dc_next
        dp = d_pre[:, t]
        dp[:, :hid] = dc * g * i * (1.0 - i)
        dp[:, hid : 2 * hid] = dc * c_prev * f * (1.0 - f)
        dp[:, 2 * hid : 3 * hid] = dh * tc * o * (1.0 - o)
        dp[:, 3 * hid :] = dc * i * (1.0 - g * g)
        dh_next = dp @ w_hh
        dc_next = dc * f
    return d_pre @ w_ih


def reverse_padded(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's first lengths[b] steps reversed, padding left in place (its own inverse)."""
    steps = np.arange(x.shape[1])[None, :]
    lengths = lengths[:, None]
    index = np.where(steps < lengths, lengths - 1 - steps, steps)
    return np.take_along_axis(x, index[:, :, None], axis=1)


@dataclass
class StackCache:
    inputs: list[np.ndarray]  # input of each layer
    forward: list[LstmCache]
    backward: list[LstmCache]


class LstmStack:
    """`SequenceLstm`: stacked unidirectional layers, or bidirectional layers kept as separate forward
    and backward LSTMs whose outputs are concatenated (forward first)."""

    def __init__(self, forward: list[LstmWeights], backward: list[LstmWeights] | None) -> None:
        self.forward_layers = forward
        self.backward_layers = backward
        self.bidirectional = backward is not None
        self.out_dim = forward[0].hidden * (2 if self.bidirectional else 1)

    def run(self, x: np.ndarray, lengths: np.ndarray, keep: bool = False):
        cache = StackCache([], [], []) if keep else None
        for k, fwd in enumerate(self.forward_layers):
            if keep:
                cache.inputs.append(x)
            out_f, c_f = run_lstm(x, fwd, keep)
            if self.bidirectional:
                out_b, c_b = run_lstm(reverse_padded(x, lengths), self.backward_layers[k], keep)
                x = np.concatenate([out_f, reverse_padded(out_b, lengths)], axis=-1)
                if keep:
                    cache.backward.append(c_b)
            else:
                x = out_f
            if keep:
                cache.forward.append(c_f)
        return x, cache

    def resume(self, rows: np.ndarray, start: np.ndarray, pre: np.ndarray, cache: StackCache) -> np.ndarray:
        """Outputs of the last layer for variants of cached windows whose inputs changed from step
        start[r] on (unidirectional stacks only).  rows: the cached window of each variant; pre: the
        variants' layer-0 input halves; variants sorted by start."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer's backward direction reads the changed steps first")
        steps = np.arange(pre.shape[1])
        changed = (steps[None, :] >= start[:, None])[:, :, None]
        before = np.maximum(start - 1, 0)
        has_state = (start > 0)[:, None]
        out = None
        for k, w in enumerate(self.forward_layers):
            cached = cache.forward[k]
            if k:
                pre = out @ w.w_ih_t + w.bias
            h0 = np.where(has_state, cached.outputs[rows, before], 0.0)
            c0 = np.where(has_state, cached.cells[rows, before], 0.0)
            out = np.where(changed, resume_lstm(pre, w, start, h0, c0), cached.outputs[rows])
        return out

    def backward(self, lengths: np.ndarray, cache: StackCache, d_out: np.ndarray) -> np.ndarray:
        for k in range(len(self.forward_layers) - 1, -1, -1):
            x = cache.inputs[k]
            if self.bidirectional:
                hid = self.forward_layers[k].hidden
                d_x = lstm_backward(x, self.forward_layers[k], cache.forward[k], d_out[..., :hid])
                x_rev = reverse_padded(x, lengths)
                d_rev = reverse_padded(d_out[..., hid:], lengths)
                d_x_rev = lstm_backward(x_rev, self.backward_layers[k], cache.backward[k], d_rev)
                d_out = d_x + reverse_padded(d_x_rev, lengths)
            else:
                d_out = lstm_backward(x, self.forward_layers[k], cache.forward[k], d_out)
        return d_out


# --- pooling over a window's LSTM outputs --------------------------------------------------------------


def pool(out: np.ndarray, lengths: np.ndarray, mode: str, bidirectional: bool) -> np.ndarray:
    """(B, T, F) -> (B, F) over each row's first lengths[b] positions (`layers.pool_outputs`)."""
    batch, steps, features = out.shape
    rows = np.arange(batch)
    if mode == "last":
        if not bidirectional:
            return out[rows, lengths - 1]
        half = features // 2
        return np.concatenate([out[rows, lengths - 1, :half], out[:, 0, half:]], axis=1)
    mask = (np.arange(steps)[None, :] < lengths[:, None])[:, :, None]
    if mode == "mean":
        return (out * mask).sum(1) / np.maximum(lengths, 1)[:, None].astype(out.dtype)
    if mode == "max":
        return np.where(mask, out, -np.inf).max(1).astype(out.dtype)
    raise ValueError(f"unknown pooling {mode!r}")


def pool_backward(
    out: np.ndarray, lengths: np.ndarray, mode: str, bidirectional: bool, d_pooled: np.ndarray
) -> np.ndarray:
    """Gradient of the outputs (B, T, F) given the gradient of the pooled features (B, F)."""
    batch, steps, features = out.shape
    rows = np.arange(batch)
    d_out = np.zeros_like(out)
    if mode == "last":
        if not bidirectional:
            d_out[rows, lengths - 1] = d_pooled
        else:
            half = features // 2
            d_out[rows, lengths - 1, :half] = d_pooled[:, :half]
            d_out[:, 0, half:] += d_pooled[:, half:]
        return d_out
    mask = (np.arange(steps)[None, :] < lengths[:, None])[:, :, None]
    if mode == "mean":
        return mask * (d_pooled / np.maximum(lengths, 1)[:, None].astype(out.dtype))[:, None, :]
    if mode == "max":
        arg = np.where(mask, out, -np.inf).argmax(1)  # (B, F): the step each feature came from
        d_out[rows[:, None], arg, np.arange(features)[None, :]] = d_pooled
        return d_out
    raise ValueError(f"unknown pooling {mode!r}")

"""BSM transformer: the BSM block encoder -> a small pre-norm transformer encoder over the blocks of a
window -> masked pooling -> P(malicious).

Why this model.  Nebula (Trizna et al., "Nebula: Self-Attention for Dynamic Malware Analysis", 2023)
reads emulation reports (API calls with argument classes, file / registry / network events) as token
sequences with a small transformer encoder and stays accurate on files collected months after its
training set (ROC-AUC 0.966, TPR 0.73 at 1 % FPR, as issue #30 quotes it).  Its input is a flat token
stream; here the stream would be every executed instruction (thousands per window), and self-attention's
cost grows with the square of the length.  So the transformer reads the same items the BSM LSTM reads —
executed basic blocks, with the API calls (and their argument-class tokens) as items between them — each
already summarised by `bsm.BlockEncoder` from its instructions: hierarchical, instructions -> block ->
window, as hierarchical attention networks read words -> sentence -> document (Yang et al., 2016).  A
window of 256 blocks is then a 256-step sequence, which two layers of four heads of width 64 handle on
one CPU core (benchmarks/models_bench.py).  What attention adds over the LSTM: any block of the window
can weigh any other directly (an API call and the decryption loop that fed it, hundreds of blocks
apart), where the LSTM carries everything through one 64-number state.

The layers are pre-norm (LayerNorm before each sublayer, as in Xiong et al., "On Layer Normalization in
the Transformer Architecture", 2020): trained with the same plain AdamW loop and learning rate as the
LSTMs, no warm-up schedule.  Positions are learned, one per step of the longest window the model reads
(`max_positions`, the window length).  Attention is written out rather than taken from
`nn.TransformerEncoder` (or `F.scaled_dot_product_attention`, which was also slower here on CPU with a
padding mask): the exported graph is then this code op for op, with no fused kernel's export to trust,
and the scanner's gradient graph (`runtrace.models.gradient.TransformerGradient`) reuses these very
functions to state the backward pass.

Padding: each window's real blocks come first; padding keys get no attention weight, so a real position's
output never depends on the padding (`tests/test_models_transformer.py` checks it), and pooling reads the
real positions only.
"""

from __future__ import annotations

import torch
from torch import nn

from runtrace.models.bsm import BlockEncoder, BlockSequenceNet
from runtrace.models.hyperparameters import BsmTransformerConfig
from runtrace.models.layers import pool_outputs


def gelu(u: torch.Tensor) -> torch.Tensor:
    """The exact GELU, u * Phi(u), spelled with erf: `F.gelu` exports as an ONNX Gelu node that ONNX
    Runtime 1.32 refuses in the exporter's graph ("No Op registered for Gelu with domain_version of
    18"), while Erf is in every opset it runs."""
    return 0.5 * u * (1.0 + torch.erf(u * 0.5**0.5))


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, 3D) packed projections -> queries, keys, values, each (B, heads, T, D / heads)."""
    width = qkv.shape[-1] // (3 * heads)
    q, k, v = qkv.unflatten(-1, (3, heads, width)).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d) -> (B, T, heads * d), the inverse of one part of `split_heads`."""
    return x.transpose(1, 2).flatten(2)


def padding_bias(keep: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, T): 0 at real keys, -inf at padding, added to the attention scores.  (Added rather than
    `masked_fill`ed: the sum's backward is free, the fill's is one more pass over every (T, T) matrix.)"""
    return torch.zeros(keep.shape, dtype=torch.float32, device=keep.device).masked_fill(~keep, float("-inf"))[
        :, None, None, :
    ]


def attention_weights(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Softmax attention (B, heads, T, T) with `padding_bias` added: padding keys get weight 0 (every
    window has a real first step, so no row is all padding).  The queries are scaled, not the scores:
    (T, d) numbers instead of (T, T)."""
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2) + bias).softmax(dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention.  No dropout on the attention weights: on CPU, drawing a mask for every
    (T, T) matrix took a quarter of a training step (measured, 256-block windows); the residual and
    feed-forward dropout of `EncoderLayer` regularise instead."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.heads)
        return self.out(merge_heads(attention_weights(q, k, bias) @ v))


class EncoderLayer(nn.Module):
    """x + attention(norm(x)), then x + feed-forward(norm(x)) (GELU)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), bias))
        return x + self.drop(self.ff2(self.drop(gelu(self.ff1(self.norm2(x))))))


class BsmTransformerNet(BlockSequenceNet):
    def __init__(self, config: BsmTransformerConfig) -> None:
        super().__init__()
        if config.insn_vocab_size < 2 or (config.block_id_embedding and config.block_vocab_size < 2):
            raise ValueError("BsmTransformerNet needs insn_vocab_size (and block_vocab_size) of at least 2")
        if config.max_positions < 1:
            raise ValueError("BsmTransformerNet needs max_positions (the window length)")
        self.config = config
        dim = config.block_dim
        self.blocks = BlockEncoder(config)
        self.positions = nn.Embedding(config.max_positions, dim)
        # Small, as for the other learned vectors of a transformer: the default N(0, 1) would drown the
        # block vectors (tanh, within [-1, 1]) in position noise at the start of training.
        nn.init.normal_(self.positions.weight, std=0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, config.num_heads, config.ff_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(dim)  # pre-norm layers leave their output unnormalised
        self.drop = nn.Dropout(config.dropout)
        self.feature_dim = dim
        self.head = nn.Linear(dim, 1)

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, block_dim) block vectors, each row's real steps first, T <= max_positions ->
        (logits (B,), features (B, block_dim))."""
        steps = torch.arange(x.shape[1], device=x.device)
        bias = padding_bias(steps[None, :] < lengths.to(x.device)[:, None])
        h = self.drop(x + self.positions(steps))
        for layer in self.layers:
            h = layer(h, bias)
        features = pool_outputs(self.norm(h), lengths, self.config.pooling, bidirectional=False)
        return self.head(self.drop(features)).squeeze(-1), features

"""BSM — Basic block as a Sequence Model: block encoder -> LSTM over blocks -> pooling -> P(malicious).

A block's vector is computed from its instructions (embedded and pooled, or a small convolution), so a
block never seen in training still means something; an optional learned embedding of the block's
identity (from the block vocabulary fitted on training files) is added for blocks that are common.

Blocks repeat heavily inside a window (loops), so the encoder runs once per *distinct* block of the
batch: the inputs are the distinct blocks' instruction matrix plus, per position, an index into it.
"""

from __future__ import annotations

import torch
from torch import nn

from runtrace.models.hyperparameters import BsmLstmConfig, BsmTransformerConfig
from runtrace.models.layers import SequenceLstm, pool_outputs
from runtrace.models.spec import PAD


class BlockEncoder(nn.Module):
    """(U, L) instruction ids of U distinct blocks -> (U, block_dim)."""

    def __init__(self, config: BsmLstmConfig | BsmTransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.insn_vocab_size, config.insn_embed_dim, padding_idx=PAD)
        if config.block_encoder == "conv":
            self.conv = nn.Conv1d(config.insn_embed_dim, config.block_dim, kernel_size=3, padding=1)
        else:
            self.proj = nn.Linear(config.insn_embed_dim, config.block_dim)
        self.block_ids = (
            nn.Embedding(config.block_vocab_size, config.block_dim, padding_idx=PAD)
            if config.block_id_embedding
            else None
        )

    def forward(
        self, insn: torch.Tensor, insn_lengths: torch.Tensor, block_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.embed(insn)  # (U, L, E)
        mask = (torch.arange(insn.size(1), device=insn.device)[None, :] < insn_lengths[:, None]).unsqueeze(-1)
        mode = self.config.block_encoder
        if mode == "conv":
            h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (U, L, D)
            v = h.masked_fill(~mask, float("-inf")).max(1).values
        elif mode == "max":
            v = self.proj(x.masked_fill(~mask, float("-inf")).max(1).values)
        else:
            v = self.proj((x * mask).sum(1) / insn_lengths.clamp(min=1)[:, None].to(x.dtype))
        if self.block_ids is not None:
            v = v + self.block_ids(block_ids)
        return torch.tanh(v)


class BlockSequenceNet(nn.Module):
    """What every BSM network shares: the block encoder runs once per distinct block of the batch, and a
    subclass's `windows` reads the window of block vectors gathered from that table."""

    blocks: BlockEncoder

    def forward(
        self,
        insn: torch.Tensor,
        insn_lengths: torch.Tensor,
        block_ids: torch.Tensor,
        positions: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """insn (U, L), insn_lengths (U,), block_ids (U,): the batch's distinct blocks (block vocabulary
        ids); positions (B, T): 1 + row of `insn` at each step, 0 = padding; lengths (B,) >= 1.
        Returns (logits (B,), features (B, F))."""
        vectors = self.items(insn, insn_lengths, block_ids)
        # Row 0 is the padding vector, so `positions` indexes the table directly.
        table = torch.cat([vectors.new_zeros(1, vectors.size(1)), vectors], dim=0)
        return self.windows(table[positions], lengths)

    def items(self, insn: torch.Tensor, insn_lengths: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
        """The sequence model's input vector of each distinct block -> (U, block_dim)."""
        return self.blocks(insn, insn_lengths, block_ids)

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class BsmLstmNet(BlockSequenceNet):
    def __init__(self, config: BsmLstmConfig) -> None:
        super().__init__()
        if config.insn_vocab_size < 2 or (config.block_id_embedding and config.block_vocab_size < 2):
            raise ValueError("BsmLstmNet needs insn_vocab_size (and block_vocab_size) of at least 2")
        self.config = config
        self.blocks = BlockEncoder(config)
        self.lstm = SequenceLstm(
            config.block_dim, config.hidden_size, config.num_layers, config.bidirectional, config.dropout
        )
        self.drop = nn.Dropout(config.dropout)
        self.feature_dim = config.hidden_size * (2 if config.bidirectional else 1)
        self.head = nn.Linear(self.feature_dim, 1)

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, block_dim) input vectors, each row's real steps first -> (logits, features)."""
        out = self.lstm(self.drop(x), lengths, self.config.pack)
        features = pool_outputs(out, lengths, self.config.pooling, self.config.bidirectional)
        return self.head(self.drop(features)).squeeze(-1), features

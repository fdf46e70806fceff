"""ISM — Instruction as a Sequence Model: embedding -> (bi)LSTM -> pooling -> P(malicious).

Reads one window of instruction tokens (ids of a fitted `Vocabulary`, `spec.PAD` = padding) and returns
one logit per window, plus the pooled features that an attention aggregator scores.
"""

from __future__ import annotations

import torch
from torch import nn

from runtrace.models.hyperparameters import IsmLstmConfig
from runtrace.models.layers import SequenceLstm, pool_outputs
from runtrace.models.spec import PAD


class IsmLstmNet(nn.Module):
    def __init__(self, config: IsmLstmConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ValueError("IsmLstmNet needs vocab_size (at least PAD and OOV)")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD)
        self.lstm = SequenceLstm(
            config.embed_dim, config.hidden_size, config.num_layers, config.bidirectional, config.dropout
        )
        self.drop = nn.Dropout(config.dropout)
        self.feature_dim = config.hidden_size * (2 if config.bidirectional else 1)
        self.head = nn.Linear(self.feature_dim, 1)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) int64, lengths (B,) int64 >= 1 -> (logits (B,), features (B, F))."""
        return self.windows(self.items(tokens), lengths)

    def items(self, tokens: torch.Tensor) -> torch.Tensor:
        """The LSTM's input vector of each token id (any shape) -> (..., embed_dim)."""
        return self.embed(tokens)

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, embed_dim) input vectors, each row's real steps first -> (logits, features)."""
        out = self.lstm(self.drop(x), lengths, self.config.pack)
        features = pool_outputs(out, lengths, self.config.pooling, self.config.bidirectional)
        return self.head(self.drop(features)).squeeze(-1), features

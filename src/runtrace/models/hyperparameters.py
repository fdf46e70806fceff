"""A model's settings — network shape, training and vocabulary hyperparameters — as plain dataclasses
that import neither torch nor numpy: the networks, the training loop and the estimator build from them,
and the command line takes its option defaults from them, so each default is written once, here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from runtrace.models.names import BLOCK_ENCODERS, MAX_BLOCK_TOKENS, POOLINGS, TRANSFORMER_POOLINGS, VAL_BY


@dataclass
class IsmLstmConfig:
    vocab_size: int = 0  # set from the vocabulary fitted on the training files
    embed_dim: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1
    pooling: str = "mean"  # "last" | "mean" | "max" over the LSTM outputs of the window
    pack: bool | None = None  # pack_padded_sequence or padded+exact (see SequenceLstm); None: CUDA only

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BsmLstmConfig:
    insn_vocab_size: int = 0  # set from the instruction vocabulary fitted on the training files
    block_vocab_size: int = 0  # set from the block vocabulary; used when block_id_embedding is on
    insn_embed_dim: int = 32
    block_dim: int = 64
    block_encoder: str = "mean"  # "mean" | "max" pooled instruction embeddings, or "conv" (width 3) + max
    block_id_embedding: bool = True
    max_block_tokens: int = MAX_BLOCK_TOKENS  # longer blocks keep their first tokens and their last
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1
    pooling: str = "mean"
    pack: bool | None = None  # see IsmLstmConfig.pack

    def __post_init__(self) -> None:
        if self.block_encoder not in BLOCK_ENCODERS:
            raise ValueError(f"block_encoder must be one of {', '.join(BLOCK_ENCODERS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BsmTransformerConfig:
    """The BSM block encoder (the fields it shares with `BsmLstmConfig` mean the same) feeding a small
    pre-norm transformer encoder over the blocks of a window (`runtrace.models.bsm_transformer`)."""

    insn_vocab_size: int = 0  # set from the instruction vocabulary fitted on the training files
    block_vocab_size: int = 0  # set from the block vocabulary; used when block_id_embedding is on
    insn_embed_dim: int = 32
    block_dim: int = 64  # the block vectors' size, which is also the transformer's width
    block_encoder: str = "mean"
    block_id_embedding: bool = True
    max_block_tokens: int = MAX_BLOCK_TOKENS
    num_layers: int = 2
    num_heads: int = 4  # block_dim must be a multiple of it
    ff_dim: int = 128  # the feed-forward sublayer's hidden width
    max_positions: int = 0  # learned positions; set to the window length when fitting
    dropout: float = 0.1
    pooling: str = "mean"  # "mean" | "max" over the window's real blocks

    def __post_init__(self) -> None:
        if self.block_encoder not in BLOCK_ENCODERS:
            raise ValueError(f"block_encoder must be one of {', '.join(BLOCK_ENCODERS)}")
        if self.pooling not in TRANSFORMER_POOLINGS:
            raise ValueError(f"transformer pooling must be one of {', '.join(TRANSFORMER_POOLINGS)}")
        if self.num_heads < 1 or self.block_dim % self.num_heads:
            raise ValueError(
                f"block_dim ({self.block_dim}) must be a multiple of num_heads ({self.num_heads})"
            )
        if self.num_layers < 1 or self.ff_dim < 1:
            raise ValueError("num_layers and ff_dim must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32  # windows per step (attention aggregation: whole files, up to this many windows)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 3  # epochs without a better validation loss before stopping
    val_fraction: float = 0.15  # of the *training* files, held out for early stopping
    val_by: str = "file"  # "group": validation files drawn by origin group, never straddling
    class_weight: str | None = "balanced"  # "balanced": both classes weigh the same in the loss
    file_balanced: bool = True  # a file's windows share one file's weight, however many there are
    bucket: bool = True  # batch windows of similar length together
    bucket_chunk: int = 64  # batches per sorting chunk (larger: less padding, less randomness)
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    progress: bool = False  # a rich progress bar (the CLI turns it on; library callers may have their own)
    log_path: str | None = None  # JSON lines, one object per epoch

    def __post_init__(self) -> None:
        if self.val_by not in VAL_BY:
            raise ValueError(f"val_by must be one of {', '.join(VAL_BY)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class VocabularyConfig:
    min_count: int = 1
    min_documents: int = 2  # training files a token must occur in (one file's fingerprint is no feature)
    max_size: int | None = 50_000

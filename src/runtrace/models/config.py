"""A window classifier's (LSTM or transformer) whole configuration, as saved beside its weights
(`config.json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from runtrace.models.hyperparameters import (
    BsmLstmConfig,
    BsmTransformerConfig,
    IsmLstmConfig,
    TrainConfig,
    VocabularyConfig,
)
from runtrace.models.spec import AGGREGATIONS
from runtrace.represent.windows import WindowConfig


@dataclass
class LstmClassifierConfig:
    model: IsmLstmConfig | BsmLstmConfig | BsmTransformerConfig
    window: WindowConfig | None = None  # None: the dataset's build-time defaults, else DEFAULT_WINDOWS
    aggregation: str = "mean"  # window probabilities -> file: "mean", "max", or learned "attention"
    train: TrainConfig = field(default_factory=TrainConfig)
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)  # instruction tokens
    block_vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)  # BSM block keys
    predict_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")

    def to_json(self) -> dict:
        return {
            "model": self.model.to_json(),
            "window": self.window.to_json() if self.window else None,
            "aggregation": self.aggregation,
            "train": self.train.to_json(),
            "vocabulary": asdict(self.vocabulary),
            "block_vocabulary": asdict(self.block_vocabulary),
            "predict_batch_size": self.predict_batch_size,
        }

    @classmethod
    def from_json(
        cls, config: dict, model_config: type[IsmLstmConfig | BsmLstmConfig | BsmTransformerConfig]
    ) -> LstmClassifierConfig:
        """The inverse of to_json; KeyError / TypeError / ValueError when a field is missing or wrong."""
        return cls(
            model=model_config(**config["model"]),
            window=WindowConfig.from_json(config["window"]),
            aggregation=config["aggregation"],
            train=TrainConfig(**config["train"]),
            vocabulary=VocabularyConfig(**config["vocabulary"]),
            block_vocabulary=VocabularyConfig(**config["block_vocabulary"]),
            predict_batch_size=int(config["predict_batch_size"]),
        )

"""The LSTM models (ISM, BSM), their training loop and safe checkpoints, behind `FileClassifier`.

`IsmLstm` / `BsmLstm` are the estimators (fit / predict_proba / save / load); `IsmLstmNet` / `BsmLstmNet`
are the torch modules inside them.
"""

from runtrace.models.base import FileClassifier
from runtrace.models.bsm import BsmLstmConfig, BsmLstmNet
from runtrace.models.estimator import (
    AGGREGATIONS,
    BsmLstm,
    IsmLstm,
    LstmClassifier,
    LstmClassifierConfig,
    VocabularyConfig,
    aggregate_windows,
    load_model,
    make_classifier,
)
from runtrace.models.ism import IsmLstmConfig, IsmLstmNet
from runtrace.models.train import TrainConfig

__all__ = [
    "AGGREGATIONS",
    "BsmLstm",
    "BsmLstmConfig",
    "BsmLstmNet",
    "FileClassifier",
    "IsmLstm",
    "IsmLstmConfig",
    "IsmLstmNet",
    "LstmClassifier",
    "LstmClassifierConfig",
    "TrainConfig",
    "VocabularyConfig",
    "aggregate_windows",
    "load_model",
    "make_classifier",
]

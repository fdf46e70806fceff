"""The sequence models (the ISM and BSM LSTMs, the BSM transformer), their training loop, safe
checkpoints and ONNX export, behind `FileClassifier`, reading `SequenceData` (`interface`).

`IsmLstm` / `BsmLstm` / `BsmTransformer` are the estimators (fit / predict_proba / save / load);
`IsmLstmNet` / `BsmLstmNet` / `BsmTransformerNet` are the torch modules inside them.  `spec` (the
checkpoint format) and `aggregation` (window outputs -> file score) need no torch: the scanner imports
them; nor do `interface`, `names` and `windowing`, which the evaluation and the command line read.  So
this package imports torch only when a name that needs it is first used (PEP 562), never on
`import runtrace.models.spec`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FileClassifier": "interface",
    "SequenceData": "interface",
    "BsmLstmConfig": "hyperparameters",
    "BsmLstmNet": "bsm",
    "BsmTransformerConfig": "hyperparameters",
    "BsmTransformerNet": "bsm_transformer",
    "BsmTransformer": "estimator",
    "IsmLstmConfig": "hyperparameters",
    "IsmLstmNet": "ism",
    "BsmLstm": "estimator",
    "IsmLstm": "estimator",
    "LstmClassifier": "estimator",
    "LstmClassifierConfig": "estimator",
    "VocabularyConfig": "hyperparameters",
    "load_model": "estimator",
    "make_classifier": "estimator",
    "TrainConfig": "hyperparameters",
    "AGGREGATIONS": "spec",
    "aggregate_windows": "aggregation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""`IsmLstm`, `BsmLstm` and `BsmTransformer`: the window networks as file classifiers (`fit` /
`predict_proba`).

What happens inside `fit(data, train_idx)`:
1. a validation split is drawn from the training files only (by file, or by origin group);
2. every file is cut into windows (`WindowConfig`; each window keeps its file's row);
3. the vocabularies are fitted on the tokens of the fitting files' windows only;
4. the network is trained on windows labelled with their file's label (or, with attention aggregation,
   on whole files: all windows of a file in one batch, pooled by learned attention), early-stopped on
   the validation files' *file-level* loss;
5. a file's score aggregates its windows: mean or max of window probabilities, or attention.

`data` is a `SequenceData` (`runtrace.models.interface`): a `SequenceDataset`, or an evaluation's view of
one (a row guard, the leaky protocol's windows); only the rows passed in are ever read.

Window-level access, for the "leaky" protocol that splits windows regardless of their file:
`windows(data, idx)` cuts windows with the model's settings, `fit_windows(data, windows)` trains on
any set of windows, `predict_window_proba(data, windows)` scores windows one by one.

The pieces live by concern: `windowing` (which windows, window -> file scores), `vocabularies`,
`weights` (class and file balance), `batching` (stores, batches, tensors), `window_training` (what the
fit loop in `train` runs), `config` and `checkpoint` (what is saved, and how).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from runtrace.models.aggregation import aggregate_windows
from runtrace.models.batching import DatasetTables, WindowEncoder, WindowStore
from runtrace.models.bsm import BsmLstmNet
from runtrace.models.bsm_transformer import BsmTransformerNet
from runtrace.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtrace.models.config import LstmClassifierConfig
from runtrace.models.hyperparameters import BsmLstmConfig, BsmTransformerConfig, IsmLstmConfig
from runtrace.models.interface import SequenceData
from runtrace.models.ism import IsmLstmNet
from runtrace.models.provenance import training_data_spec
from runtrace.models.spec import AGGREGATIONS, MAX_BLOCK_TOKENS
from runtrace.models.train import distributed_context, fit_loop, resolve_device, split_validation
from runtrace.models.vocabularies import VocabularyConfig, fit_vocabularies
from runtrace.models.window_training import WindowTraining, window_outputs
from runtrace.models.windowing import DEFAULT_WINDOWS, resolve_window_config
from runtrace.represent.encode import BSM, ISM
from runtrace.represent.vocabulary import Vocabulary
from runtrace.represent.windows import WindowConfig, Windows, cut_windows

__all__ = [  # the configuration and window helpers are re-exported: callers import them from here
    "AGGREGATIONS",
    "DEFAULT_WINDOWS",
    "BsmLstm",
    "BsmTransformer",
    "IsmLstm",
    "LstmClassifier",
    "LstmClassifierConfig",
    "VocabularyConfig",
    "WindowNet",
    "aggregate_windows",
    "load_model",
    "make_classifier",
]


class WindowNet(nn.Module):
    """The network the loop trains: an ISM/BSM body (LSTM or transformer) plus, for attention
    aggregation, the scorer."""

    def __init__(self, body: nn.Module, attention: bool) -> None:
        super().__init__()
        self.body = body
        self.attention = nn.Linear(body.feature_dim, 1) if attention else None

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._scored(*self.body(**inputs))

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Window logits (and attention scores) from the body's input vectors x (B, T, D): the part of
        `forward` after the items are encoded, which the scanner runs as an ONNX graph."""
        return self._scored(*self.body.windows(x, lengths))

    def _scored(
        self, logits: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scores = self.attention(features).squeeze(-1) if self.attention is not None else None
        return logits, scores


class LstmClassifier:
    """Common machinery of the window classifiers; use `IsmLstm`, `BsmLstm` or `BsmTransformer` (the
    name is the LSTMs', which came first: the transformer differs only in its network).

    scikit-learn's rules: the constructor stores its configuration and `fit` never changes it (one
    config object may serve many models); what fitting learns is in attributes with a trailing
    underscore, absent before the first `fit` (or `load`):

    - `config_`: the configuration as fitted: windows resolved against the training data, the network's
      vocabulary sizes set (what `config.json` records);
    - `vocabulary_`, `block_vocabulary_`: the instruction and (BSM, with block ids) block-key vocabularies;
    - `data_spec_`: how the training data was built (normalisation, api, api_args, max_tokens, the
      shortest trace);
    - `net_`: the trained `WindowNet`; `device_`: where it runs;
    - `training_log_`: one record per epoch (losses, validation figures, timings), and `history_` its
      learning curve (what the evaluation report plots).
    """

    representation: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    model_config: ClassVar[type] = object  # the network's configuration dataclass

    config_: LstmClassifierConfig
    vocabulary_: Vocabulary
    block_vocabulary_: Vocabulary | None
    data_spec_: dict
    net_: WindowNet
    device_: torch.device
    training_log_: list[dict]

    def __init__(self, config: LstmClassifierConfig | None = None, **train_overrides) -> None:
        """`train_overrides` replace fields of the training configuration: `IsmLstm(epochs=5, seed=1)`
        (in a new configuration: the one passed in is left as it is)."""
        config = config or self.default_config()
        if train_overrides:
            config = replace(config, train=replace(config.train, **train_overrides))
        self.config = config

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        raise NotImplementedError

    @property
    def history_(self) -> list[dict]:
        """The per-epoch learning curve (read by the evaluation report): loss and validation metrics only;
        `training_log_` has everything (timings, throughput)."""
        keep = ("epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "val_fpr")
        return [{k: h[k] for k in keep if k in h} for h in self.training_log_]

    # --- windows ------------------------------------------------------------------------------------
    def window_config(self, data: SequenceData) -> WindowConfig:
        """The windows this model reads: fixed by `fit`; before it, the configured ones, else `data`'s
        build-time defaults, else the representation's."""
        if hasattr(self, "config_"):
            return self.config_.window
        return resolve_window_config(self.config.window, data)

    def windows(self, data: SequenceData, idx: np.ndarray) -> Windows:
        """The windows this model reads for files idx: `.file_index` per window, `.arrays(data)`."""
        return cut_windows(data, idx, self.window_config(data))

    # --- fitting ------------------------------------------------------------------------------------
    def fit(self, data: SequenceData, train_idx: np.ndarray) -> LstmClassifier:
        self._check_data(data, fitting=True)
        train_idx = np.asarray(train_idx, dtype=np.int64)
        cfg = self.config.train
        window = resolve_window_config(self.config.window, data)
        labels = np.asarray(data.labels())
        by = np.asarray(data.groups())[train_idx] if cfg.val_by == "group" else train_idx.astype(str)
        fit_pos, val_pos = split_validation(labels[train_idx], by, cfg.val_fraction, cfg.seed)
        fit_store = WindowStore.build(data, cut_windows(data, train_idx[fit_pos], window))
        val_store = WindowStore.build(data, cut_windows(data, train_idx[val_pos], window))
        return self._train(data, labels, fit_store, val_store, window, units="file")

    def fit_windows(self, data: SequenceData, windows: Windows) -> LstmClassifier:
        """Train on a set of windows as independent samples (the leaky protocol); the validation split
        is drawn from these windows at random, the vocabularies from the rest."""
        self._check_data(data, fitting=True)
        cfg = self.config.train
        window = resolve_window_config(self.config.window, data)
        order = np.random.default_rng(cfg.seed).permutation(len(windows))
        n_val = int(round(cfg.val_fraction * len(windows))) if len(windows) >= 4 else 0
        store = WindowStore.build(data, windows)
        fit_store, val_store = store.subset(np.sort(order[n_val:])), store.subset(np.sort(order[:n_val]))
        return self._train(data, np.asarray(data.labels()), fit_store, val_store, window, units="window")

    def _train(
        self,
        data: SequenceData,
        labels: np.ndarray,
        fit: WindowStore,
        val: WindowStore,
        window: WindowConfig,
        units: str,
    ) -> LstmClassifier:
        config, cfg = self.config, self.config.train
        if len(fit) == 0:
            raise ValueError("no training windows (no training files?)")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        ctx = distributed_context(cfg.device)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        tables = DatasetTables.of(data)
        vocabulary, block_vocabulary = fit_vocabularies(
            tables,
            fit.documents(),
            config.vocabulary,
            config.block_vocabulary,
            block_ids=tables.representation == BSM and config.model.block_id_embedding,
        )
        fitted = replace(config, window=window, model=self._sized(vocabulary, block_vocabulary, window))
        net = WindowNet(self._body(fitted.model), attention=fitted.aggregation == "attention").to(ctx.device)
        task = WindowTraining(
            fit,
            val,
            labels,
            _encoder(tables, fitted.model, vocabulary, block_vocabulary),
            fitted.aggregation,
            units,
            cfg,
            ctx,
            fitted.predict_batch_size,
        )
        self.training_log_ = fit_loop(net, task, cfg, ctx)
        self.config_, self.net_, self.device_ = fitted, net, ctx.device
        self.vocabulary_, self.block_vocabulary_ = vocabulary, block_vocabulary
        # The scanner judges no trace shorter than any the model was trained on.
        self.data_spec_ = training_data_spec(data).to_json()
        return self

    # --- networks -----------------------------------------------------------------------------------
    def _sized(self, vocabulary: Vocabulary, block_vocabulary: Vocabulary | None, window: WindowConfig):
        """The network configuration with the fitted vocabularies' sizes (and, where the network needs
        it, the window length)."""
        raise NotImplementedError

    def _body(self, model) -> nn.Module:
        raise NotImplementedError

    def _check_data(self, data: SequenceData, fitting: bool = False) -> None:
        if data.representation != self.representation:
            raise ValueError(
                f"{self.kind} reads {self.representation.upper()} datasets, not {data.representation}"
            )
        if fitting:
            return
        if not hasattr(self, "net_"):
            raise ValueError("model is not fitted")
        settings = (("normalisation", data.normalisation), ("api", data.api), ("api_args", data.api_args))
        for key, value in settings:
            # The tokens mean something else when the data was built another way.  (A checkpoint that
            # does not say how its training data was built cannot be checked; one that says but predates
            # argument tokens was trained without them.)
            trained = self.data_spec_.get(key, False if key == "api_args" and self.data_spec_ else None)
            if trained is not None and value != trained:
                raise ValueError(f"model was trained on {key}={trained!r} data, this dataset has {value!r}")

    # --- prediction ---------------------------------------------------------------------------------
    def predict_window_logits(
        self, data: SequenceData, windows: Windows
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw window logits and (attention models) attention scores, in the order of `windows`."""
        self._check_data(data)
        config = self.config_
        store = WindowStore.build(data, windows)
        encoder = _encoder(DatasetTables.of(data), config.model, self.vocabulary_, self.block_vocabulary_)
        attention = config.aggregation == "attention"
        return window_outputs(self.net_, encoder, store, self.device_, config.predict_batch_size, attention)

    def predict_window_proba(self, data: SequenceData, windows: Windows) -> np.ndarray:
        """P(malicious) of each window on its own."""
        logits, _ = self.predict_window_logits(data, windows)
        return 1.0 / (1.0 + np.exp(-logits))

    def predict_proba(self, data: SequenceData, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        self._check_data(data)
        if len(idx) == 0:
            return np.zeros(0, dtype=np.float64)
        distinct = np.unique(idx)
        windows = cut_windows(data, distinct, self.config_.window)
        logits, scores = self.predict_window_logits(data, windows)
        files, proba = aggregate_windows(windows.file_index, logits, scores, self.config_.aggregation)
        return proba[np.searchsorted(files, idx)]

    # --- checkpoints --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        if not hasattr(self, "net_"):
            raise ValueError("model is not fitted")
        config = {
            "kind": self.kind,
            "representation": self.representation,
            "data": self.data_spec_,
            **self.config_.to_json(),
        }
        vocabularies = {
            "instructions": self.vocabulary_.to_json(),
            "blocks": self.block_vocabulary_.to_json() if self.block_vocabulary_ is not None else None,
        }
        save_checkpoint(path, config, vocabularies, self.net_.state_dict(), self.training_log_)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> LstmClassifier:
        """Load a saved model (of either kind when called on LstmClassifier).  Executes nothing from the
        files: JSON and safetensors only."""
        config, vocabularies, state, training_log = load_checkpoint(path)
        target = CLASSIFIERS.get(config.get("kind"))
        if target is None or (cls is not LstmClassifier and target is not cls):
            raise CheckpointError(
                f"{path}: model kind {config.get('kind')!r} is not a {cls.kind or 'runtrace'} model"
            )
        try:
            fitted = LstmClassifierConfig.from_json(config, target.model_config)
            clf = target(fitted)
            blocks = vocabularies.get("blocks")
            clf.vocabulary_ = Vocabulary.from_json(vocabularies["instructions"])
            clf.block_vocabulary_ = Vocabulary.from_json(blocks) if blocks else None
            clf.data_spec_ = dict(config.get("data") or {})
            clf.training_log_ = training_log
            clf.config_ = fitted
            clf.net_ = WindowNet(clf._body(fitted.model), attention=fitted.aggregation == "attention")
            clf.net_.load_state_dict(state, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: inconsistent model files ({e})") from None
        clf.device_ = resolve_device("cpu" if device == "auto" and not torch.cuda.is_available() else device)
        clf.net_.to(clf.device_).eval()
        return clf


def _encoder(
    tables: DatasetTables,
    model: IsmLstmConfig | BsmLstmConfig | BsmTransformerConfig,
    vocabulary: Vocabulary,
    block_vocabulary: Vocabulary | None,
) -> WindowEncoder:
    max_block = getattr(model, "max_block_tokens", MAX_BLOCK_TOKENS)  # BSM only
    return WindowEncoder(tables, vocabulary, block_vocabulary, max_block)


class IsmLstm(LstmClassifier):
    """ISM: instruction tokens -> embedding -> (bi)LSTM -> pooling -> P(malicious), per window; a file's
    score aggregates its windows."""

    representation = ISM
    kind = "ism-lstm"
    model_config = IsmLstmConfig

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        return LstmClassifierConfig(model=IsmLstmConfig())

    def _sized(
        self, vocabulary: Vocabulary, block_vocabulary: Vocabulary | None, window: WindowConfig
    ) -> IsmLstmConfig:
        return replace(self.config.model, vocab_size=len(vocabulary))

    def _body(self, model: IsmLstmConfig) -> nn.Module:
        return IsmLstmNet(model)


class BsmLstm(LstmClassifier):
    """BSM: executed basic blocks -> block encoder (instructions + block identity) -> LSTM -> pooling ->
    P(malicious), per window; a file's score aggregates its windows."""

    representation = BSM
    kind = "bsm-lstm"
    model_config = BsmLstmConfig

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        return LstmClassifierConfig(model=BsmLstmConfig())

    def _sized(
        self, vocabulary: Vocabulary, block_vocabulary: Vocabulary | None, window: WindowConfig
    ) -> BsmLstmConfig:
        return replace(
            self.config.model,
            insn_vocab_size=len(vocabulary),
            block_vocab_size=len(block_vocabulary) if block_vocabulary is not None else 0,
        )

    def _body(self, model: BsmLstmConfig) -> nn.Module:
        return BsmLstmNet(model)


class BsmTransformer(LstmClassifier):
    """BSM transformer: executed basic blocks -> the BSM block encoder -> pre-norm transformer encoder
    over the window's blocks -> pooling -> P(malicious), per window; a file's score aggregates its
    windows as the LSTMs' do (`runtrace.models.bsm_transformer` says why this model)."""

    representation = BSM
    kind = "bsm-transformer"
    model_config = BsmTransformerConfig

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        return LstmClassifierConfig(model=BsmTransformerConfig())

    def _sized(
        self, vocabulary: Vocabulary, block_vocabulary: Vocabulary | None, window: WindowConfig
    ) -> BsmTransformerConfig:
        return replace(
            self.config.model,
            insn_vocab_size=len(vocabulary),
            block_vocab_size=len(block_vocabulary) if block_vocabulary is not None else 0,
            max_positions=window.length,  # no window is longer
        )

    def _body(self, model: BsmTransformerConfig) -> nn.Module:
        return BsmTransformerNet(model)


# Every kind `names.KINDS` lists (tests/test_models_transformer.py checks that they agree).
CLASSIFIERS: dict[str, type[LstmClassifier]] = {c.kind: c for c in (IsmLstm, BsmLstm, BsmTransformer)}


def make_classifier(representation: str, kind: str | None = None, **config) -> LstmClassifier:
    """An unfitted classifier of `kind` (default: the representation's LSTM), which must read
    `representation`; keyword arguments replace `LstmClassifierConfig` fields (model=, window=,
    aggregation=, train=, vocabulary=, ...)."""
    if representation not in (ISM, BSM):
        raise ValueError(f"unknown representation {representation!r}")
    kind = kind or f"{representation}-lstm"
    cls = CLASSIFIERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(CLASSIFIERS)}")
    if cls.representation != representation:
        raise ValueError(f"{kind} reads {cls.representation.upper()} datasets, not {representation.upper()}")
    return cls(replace(cls.default_config(), **config))


def load_model(path: str | os.PathLike, device: str = "auto") -> LstmClassifier:
    return LstmClassifier.load(path, device=device)

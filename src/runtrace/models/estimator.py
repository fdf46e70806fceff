"""`IsmLstm` and `BsmLstm`: the LSTM networks as file classifiers (`fit` / `predict_proba`).

What happens inside `fit(data, train_idx)`:
1. a validation split is drawn from the training files only (by file, or by origin group);
2. every file is cut into windows (`WindowConfig`; each window keeps its file's row);
3. the vocabularies are fitted on the tokens of the fitting files' windows only;
4. the network is trained on windows labelled with their file's label (or, with attention aggregation,
   on whole files: all windows of a file in one batch, pooled by learned attention), early-stopped on
   the validation files' *file-level* loss;
5. a file's score aggregates its windows: mean or max of window probabilities, or attention.

`data` is a `SequenceDataset` or anything with its public surface (`representation`, `lexicon`,
`labels()`, `groups()`, `sequence(i)`): evaluation views and row guards work, and only the rows
passed in are ever read.  BSM block contents are looked up on the object or the dataset behind it.

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
from runtrace.models.batching import DatasetTables, WindowEncoder, WindowStore, find_attribute
from runtrace.models.bsm import BsmLstmConfig, BsmLstmNet
from runtrace.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtrace.models.config import LstmClassifierConfig
from runtrace.models.ism import IsmLstmConfig, IsmLstmNet
from runtrace.models.spec import AGGREGATIONS
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
    """The network the loop trains: an ISM/BSM body plus, for attention aggregation, the scorer."""

    def __init__(self, body: nn.Module, attention: bool) -> None:
        super().__init__()
        self.body = body
        self.attention = nn.Linear(body.feature_dim, 1) if attention else None

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._scored(*self.body(**inputs))

    def windows(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Window logits (and attention scores) from the LSTM's input vectors x (B, T, D): the part of
        `forward` after the items are encoded, which the scanner runs as an ONNX graph."""
        return self._scored(*self.body.windows(x, lengths))

    def _scored(
        self, logits: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scores = self.attention(features).squeeze(-1) if self.attention is not None else None
        return logits, scores


def shortest_trace(data) -> int | None:
    """Executed instructions of the dataset's shortest trace: its `--min-instructions` floor, or the
    shortest file when that is longer; None when the dataset says neither (a stand-in dataset)."""
    meta = find_attribute(data, "meta") or {}
    floor = meta.get("min_instructions")
    files = find_attribute(data, "files")
    if files is None or "n_instructions" not in files.column_names or files.num_rows == 0:
        return floor
    return max(int(np.asarray(files.column("n_instructions")).min()), floor or 0)


class LstmClassifier:
    """Common machinery of the two LSTM classifiers; use `IsmLstm` or `BsmLstm`."""

    representation: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def __init__(self, config: LstmClassifierConfig | None = None, **train_overrides) -> None:
        """`train_overrides` replace fields of the training configuration: `IsmLstm(epochs=5, seed=1)`."""
        self.config = config or self.default_config()
        if train_overrides:
            self.config.train = replace(self.config.train, **train_overrides)
        self.net: WindowNet | None = None
        self.insn_vocab: Vocabulary | None = None
        self.block_vocab: Vocabulary | None = None
        self.data_spec: dict | None = None  # normalisation and api of the training data
        self.history: list[dict] = []
        self.device = torch.device("cpu")

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        raise NotImplementedError

    @property
    def history_(self) -> list[dict]:
        """The per-epoch learning curve (scikit-learn style name, read by the evaluation report): loss and
        validation metrics only; `history` has everything (timings, throughput)."""
        keep = ("epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "val_fpr")
        return [{k: h[k] for k in keep if k in h} for h in self.history]

    # --- windows ------------------------------------------------------------------------------------
    def window_config(self, data=None) -> WindowConfig:
        return resolve_window_config(self.config.window, data, self.representation)

    def windows(self, data, idx: np.ndarray) -> Windows:
        """The windows this model reads for files idx: `.file_index` per window, `.arrays(data)`."""
        return cut_windows(data, idx, self.window_config(data))

    # --- fitting ------------------------------------------------------------------------------------
    def fit(self, data, train_idx: np.ndarray) -> LstmClassifier:
        self._check_data(data, fitting=True)
        train_idx = np.asarray(train_idx, dtype=np.int64)
        cfg = self.config.train
        self.config.window = self.window_config(data)
        labels = np.asarray(data.labels())
        by = np.asarray(data.groups())[train_idx] if cfg.val_by == "group" else train_idx.astype(str)
        fit_pos, val_pos = split_validation(labels[train_idx], by, cfg.val_fraction, cfg.seed)
        fit_store = WindowStore.build(data, cut_windows(data, train_idx[fit_pos], self.config.window))
        val_store = WindowStore.build(data, cut_windows(data, train_idx[val_pos], self.config.window))
        return self._train(data, labels, fit_store, val_store, units="file")

    def fit_windows(self, data, windows: Windows) -> LstmClassifier:
        """Train on a set of windows as independent samples (the leaky protocol); the validation split
        is drawn from these windows at random, the vocabularies from the rest."""
        self._check_data(data, fitting=True)
        cfg = self.config.train
        self.config.window = self.window_config(data)
        order = np.random.default_rng(cfg.seed).permutation(len(windows))
        n_val = int(round(cfg.val_fraction * len(windows))) if len(windows) >= 4 else 0
        store = WindowStore.build(data, windows)
        fit_store, val_store = store.subset(np.sort(order[n_val:])), store.subset(np.sort(order[:n_val]))
        return self._train(data, np.asarray(data.labels()), fit_store, val_store, units="window")

    def _train(
        self, data, labels: np.ndarray, fit: WindowStore, val: WindowStore, units: str
    ) -> LstmClassifier:
        cfg = self.config.train
        if len(fit) == 0:
            raise ValueError("no training windows (no training files?)")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        ctx = distributed_context(cfg.device)
        self.device = ctx.device
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        tables = DatasetTables.of(data)
        self.insn_vocab, self.block_vocab = fit_vocabularies(
            tables,
            fit.documents(),
            self.config.vocabulary,
            self.config.block_vocabulary,
            block_ids=tables.representation == BSM and self.config.model.block_id_embedding,
        )
        # The scanner judges no trace shorter than any the model was trained on.
        self.data_spec = {
            "normalisation": tables.normalisation,
            "api": tables.api,
            "min_instructions": shortest_trace(data),
        }
        self.net = self._build_net().to(ctx.device)
        task = WindowTraining(
            fit,
            val,
            labels,
            self._encoder(tables),
            self.config.aggregation,
            units,
            cfg,
            ctx,
            self.config.predict_batch_size,
        )
        self.history = fit_loop(self.net, task, cfg, ctx)
        return self

    # --- vocabularies and networks ------------------------------------------------------------------
    def _build_net(self) -> WindowNet:
        raise NotImplementedError

    def _encoder(self, tables: DatasetTables) -> WindowEncoder:
        max_block = getattr(self.config.model, "max_block_tokens", 32)
        return WindowEncoder(tables, self.insn_vocab, self.block_vocab, max_block)

    def _check_data(self, data, fitting: bool = False) -> None:
        if data.representation != self.representation:
            raise ValueError(
                f"{self.kind} reads {self.representation.upper()} datasets, not {data.representation}"
            )
        if fitting:
            return
        if self.net is None:
            raise ValueError("model is not fitted")
        spec = {"normalisation": find_attribute(data, "normalisation"), "api": find_attribute(data, "api")}
        known = self.data_spec or {}
        for key, value in spec.items():
            # A stand-in dataset that does not say how it was built cannot be checked; a real one must
            # match how the training data was built, or the tokens mean something else.
            if value is not None and known.get(key) is not None and value != known[key]:
                raise ValueError(
                    f"model was trained on {key}={known[key]!r} data, this dataset has {value!r}"
                )

    # --- prediction ---------------------------------------------------------------------------------
    def predict_window_logits(self, data, windows: Windows) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw window logits and (attention models) attention scores, in the order of `windows`."""
        self._check_data(data)
        store = WindowStore.build(data, windows)
        encoder = self._encoder(DatasetTables.of(data))
        attention = self.config.aggregation == "attention"
        return window_outputs(
            self.net, encoder, store, self.device, self.config.predict_batch_size, attention
        )

    def predict_window_proba(self, data, windows: Windows) -> np.ndarray:
        """P(malicious) of each window on its own."""
        logits, _ = self.predict_window_logits(data, windows)
        return 1.0 / (1.0 + np.exp(-logits))

    def predict_proba(self, data, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        self._check_data(data)
        if len(idx) == 0:
            return np.zeros(0, dtype=np.float64)
        distinct = np.unique(idx)
        windows = cut_windows(data, distinct, self.config.window)
        logits, scores = self.predict_window_logits(data, windows)
        files, proba = aggregate_windows(windows.file_index, logits, scores, self.config.aggregation)
        return proba[np.searchsorted(files, idx)]

    # --- checkpoints --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        if self.net is None:
            raise ValueError("model is not fitted")
        config = {
            "kind": self.kind,
            "representation": self.representation,
            "data": self.data_spec,
            **self.config.to_json(),
        }
        vocabularies = {
            "instructions": self.insn_vocab.to_json(),
            "blocks": self.block_vocab.to_json() if self.block_vocab is not None else None,
        }
        save_checkpoint(path, config, vocabularies, self.net.state_dict(), self.history)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> LstmClassifier:
        """Load a saved model (of either kind when called on LstmClassifier).  Executes nothing from the
        files: JSON and safetensors only."""
        config, vocabularies, state, history = load_checkpoint(path)
        kinds = {c.kind: c for c in (IsmLstm, BsmLstm)}
        target = kinds.get(config.get("kind"))
        if target is None or (cls is not LstmClassifier and target is not cls):
            raise CheckpointError(
                f"{path}: model kind {config.get('kind')!r} is not a {cls.kind or 'LSTM'} model"
            )
        try:
            model_config = IsmLstmConfig if target is IsmLstm else BsmLstmConfig
            clf = target(LstmClassifierConfig.from_json(config, model_config))
            clf.insn_vocab = Vocabulary.from_json(vocabularies["instructions"])
            blocks = vocabularies.get("blocks")
            clf.block_vocab = Vocabulary.from_json(blocks) if blocks else None
            clf.data_spec = config.get("data")
            clf.history = history
            clf.net = clf._build_net()
            clf.net.load_state_dict(state, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: inconsistent model files ({e})") from None
        clf.device = resolve_device("cpu" if device == "auto" and not torch.cuda.is_available() else device)
        clf.net.to(clf.device).eval()
        return clf


class IsmLstm(LstmClassifier):
    """ISM: instruction tokens -> embedding -> (bi)LSTM -> pooling -> P(malicious), per window; a file's
    score aggregates its windows."""

    representation = ISM
    kind = "ism-lstm"

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        return LstmClassifierConfig(model=IsmLstmConfig())

    def _build_net(self) -> WindowNet:
        self.config.model = replace(self.config.model, vocab_size=len(self.insn_vocab))
        return WindowNet(IsmLstmNet(self.config.model), attention=self.config.aggregation == "attention")


class BsmLstm(LstmClassifier):
    """BSM: executed basic blocks -> block encoder (instructions + block identity) -> LSTM -> pooling ->
    P(malicious), per window; a file's score aggregates its windows."""

    representation = BSM
    kind = "bsm-lstm"

    @classmethod
    def default_config(cls) -> LstmClassifierConfig:
        return LstmClassifierConfig(model=BsmLstmConfig())

    def _build_net(self) -> WindowNet:
        self.config.model = replace(
            self.config.model,
            insn_vocab_size=len(self.insn_vocab),
            block_vocab_size=len(self.block_vocab) if self.block_vocab is not None else 0,
        )
        return WindowNet(BsmLstmNet(self.config.model), attention=self.config.aggregation == "attention")


def make_classifier(representation: str, **config) -> LstmClassifier:
    """An unfitted classifier for a representation; keyword arguments replace `LstmClassifierConfig`
    fields (model=, window=, aggregation=, train=, vocabulary=, ...)."""
    cls = {ISM: IsmLstm, BSM: BsmLstm}.get(representation)
    if cls is None:
        raise ValueError(f"unknown representation {representation!r}")
    return cls(replace(cls.default_config(), **config))


def load_model(path: str | os.PathLike, device: str = "auto") -> LstmClassifier:
    return LstmClassifier.load(path, device=device)

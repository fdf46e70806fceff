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
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtrace.models.batching import DatasetTables, WindowEncoder, WindowStore, find_attribute, length_batches
from runtrace.models.bsm import BsmLstmConfig, BsmLstmNet
from runtrace.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtrace.models.ism import IsmLstmConfig, IsmLstmNet
from runtrace.models.layers import attention_pool
from runtrace.models.train import (
    Batch,
    TrainConfig,
    binary_metrics,
    distributed_context,
    fit_loop,
    gather_objects,
    rank_share,
    resolve_device,
    split_validation,
)
from runtrace.represent.encode import BSM, ISM, expand
from runtrace.represent.vocabulary import Vocabulary
from runtrace.represent.windows import WindowConfig, Windows, cut_windows

AGGREGATIONS = ("mean", "max", "attention")
DEFAULT_WINDOWS = {
    ISM: WindowConfig("sampled", length=512, count=8),
    BSM: WindowConfig("sampled", length=256, count=8),
}


@dataclass
class VocabularyConfig:
    min_count: int = 1
    min_documents: int = 2  # training files a token must occur in (one file's fingerprint is no feature)
    max_size: int | None = 50_000


@dataclass
class LstmClassifierConfig:
    model: IsmLstmConfig | BsmLstmConfig
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


class WindowNet(nn.Module):
    """The network the loop trains: an ISM/BSM body plus, for attention aggregation, the scorer."""

    def __init__(self, body: nn.Module, attention: bool) -> None:
        super().__init__()
        self.body = body
        self.attention = nn.Linear(body.feature_dim, 1) if attention else None

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, features = self.body(**inputs)
        scores = self.attention(features).squeeze(-1) if self.attention is not None else None
        return logits, scores


def aggregate_windows(
    file_index: np.ndarray, logits: np.ndarray, scores: np.ndarray | None, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """(distinct files, P(malicious) per file) from window logits."""
    files, inverse = np.unique(file_index, return_inverse=True)
    proba = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if mode == "max":
        out = np.full(len(files), -np.inf)
        np.maximum.at(out, inverse, proba)
        return files, out
    if mode == "attention" and scores is not None:
        scores = scores.astype(np.float64)
        top = np.full(len(files), -np.inf)
        np.maximum.at(top, inverse, scores)
        weights = np.exp(scores - top[inverse])
        weights /= np.bincount(inverse, weights=weights, minlength=len(files))[inverse]
        file_logit = np.bincount(inverse, weights=weights * logits, minlength=len(files))
        return files, 1.0 / (1.0 + np.exp(-file_logit))
    return files, np.bincount(inverse, weights=proba, minlength=len(files)) / np.bincount(inverse)


class _EpochBatches:
    """A sized, lazily built list of batches (the loop shows progress against its length)."""

    def __init__(self, plan: list, make) -> None:
        self.plan, self.make = plan, make

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        return (self.make(item) for item in self.plan)


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
        if self.config.window is not None:
            return self.config.window
        defaults = find_attribute(data, "window_defaults") if data is not None else None
        if defaults:
            return WindowConfig.from_json(defaults)
        return DEFAULT_WINDOWS[self.representation]

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
        self._fit_vocabularies(tables, fit)
        self.data_spec = {"normalisation": tables.normalisation, "api": tables.api}
        self.net = self._build_net().to(ctx.device)
        encoder = self._encoder(tables)

        fit_w = fit.windows
        attention = self.config.aggregation == "attention" and units == "file"
        weights = self._window_weights(labels, fit_w, file_balanced=cfg.file_balanced and units == "file")
        file_class_weight = self._class_weight(labels[np.unique(fit_w.file_index)])
        window_labels = labels[fit_w.file_index].astype(np.float32)

        def make_batch(positions: np.ndarray) -> Batch:
            inputs, order = encoder.encode(fit, positions, ctx.device)
            if attention:
                files, segments = np.unique(fit_w.file_index[order], return_inverse=True)
                targets, unit_weights = labels[files], file_class_weight[labels[files]]
                seg = torch.as_tensor(segments, dtype=torch.int64, device=ctx.device)
            else:
                targets, unit_weights, seg = window_labels[order], weights[order], None
            return Batch(
                inputs,
                torch.as_tensor(targets, dtype=torch.float32, device=ctx.device),
                torch.as_tensor(unit_weights, dtype=torch.float32, device=ctx.device),
                seg,
                int(fit_w.lengths[order].sum()),
            )

        def batches(epoch: int) -> _EpochBatches:
            rng = np.random.default_rng([cfg.seed, epoch])
            if attention:
                plan = self._file_batches(fit_w, rng)
            else:
                plan = length_batches(fit_w.lengths, cfg.batch_size, rng, cfg.bucket, cfg.bucket_chunk)
            return _EpochBatches(rank_share(plan, ctx), make_batch)

        def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            logits, scores = model(**batch.inputs)
            if batch.segments is not None:
                logits = attention_pool(logits, scores, batch.segments, len(batch.targets))
            elif scores is not None:
                # Window-level training of an attention model: keep the scorer in the graph, or DDP
                # would wait forever for its gradients.
                logits = logits + 0.0 * scores.sum()
            losses = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
            return (losses * batch.weights).sum() / batch.weights.sum().clamp(min=1e-12)

        def validate(net: nn.Module) -> dict:
            share = np.arange(len(val))[ctx.rank :: ctx.world_size]
            logits, scores = self._window_outputs(net, encoder, val.subset(share), ctx.device)
            n = len(val)
            all_logits, all_scores = np.zeros(n), (np.zeros(n) if scores is not None else None)
            for positions, part_logits, part_scores in gather_objects((share, logits, scores), ctx):
                all_logits[positions] = part_logits
                if all_scores is not None:
                    all_scores[positions] = part_scores
            file_index = val.windows.file_index
            if units == "file":
                files, proba = aggregate_windows(file_index, all_logits, all_scores, self.config.aggregation)
                return binary_metrics(labels[files], proba)
            return binary_metrics(labels[file_index], 1.0 / (1.0 + np.exp(-all_logits)))

        self.history = fit_loop(self.net, batches, loss_fn, validate if len(val) else None, cfg, ctx)
        return self

    def _window_weights(self, labels: np.ndarray, windows: Windows, file_balanced: bool) -> np.ndarray:
        """Loss weight per window: class balance over training files (or windows), and each file's
        windows sharing one file's weight, so long traces do not dominate."""
        files, inverse, per_file = np.unique(windows.file_index, return_inverse=True, return_counts=True)
        if file_balanced:
            unit_labels, window_share = labels[files], 1.0 / per_file[inverse]
        else:
            unit_labels, window_share = labels[windows.file_index], np.ones(len(windows))
        class_weight = self._class_weight(unit_labels)
        return (class_weight[labels[windows.file_index]] * window_share).astype(np.float32)

    def _class_weight(self, unit_labels: np.ndarray) -> np.ndarray:
        """Weight per class (index 0 benign, 1 malicious): "balanced" makes both classes weigh the same."""
        if self.config.train.class_weight != "balanced":
            return np.ones(2)
        counts = np.bincount(unit_labels, minlength=2).astype(np.float64)
        return np.where(counts > 0, counts.sum() / (2 * np.maximum(counts, 1)), 0.0)

    def _file_batches(self, windows: Windows, rng: np.random.Generator) -> list[np.ndarray]:
        """Batches of whole files (attention training).  A file with more windows than a batch holds
        contributes an evenly spaced subset of them."""
        cfg = self.config.train
        order = np.argsort(windows.file_index, kind="stable")
        bounds = np.flatnonzero(np.diff(windows.file_index[order])) + 1
        per_file = [
            w
            if len(w) <= cfg.batch_size
            else w[np.round(np.linspace(0, len(w) - 1, cfg.batch_size)).astype(int)]
            for w in np.split(order, bounds)
        ]
        tokens = np.array([windows.lengths[w].sum() for w in per_file])
        # Files in random order, sorted by size within chunks (less padding), packed greedily; the
        # batches are shuffled again at the end.
        file_order = rng.permutation(len(per_file))
        if cfg.bucket:
            chunks = np.array_split(file_order, max(1, math.ceil(len(file_order) / cfg.bucket_chunk)))
            file_order = np.concatenate([c[np.argsort(-tokens[c], kind="stable")] for c in chunks])
        batches, current, size = [], [], 0
        for f in file_order.tolist():
            if current and size + len(per_file[f]) > cfg.batch_size:
                batches.append(np.concatenate(current))
                current, size = [], 0
            current.append(per_file[f])
            size += len(per_file[f])
        if current:
            batches.append(np.concatenate(current))
        rng.shuffle(batches)
        return batches

    # --- vocabularies and networks ------------------------------------------------------------------
    def _fit_vocabularies(self, tables: DatasetTables, fit: WindowStore) -> None:
        docs = fit.documents()
        v, b = self.config.vocabulary, self.config.block_vocabulary
        if tables.representation == ISM:
            self.insn_vocab = Vocabulary.fit(
                tables.lexicon,
                docs,
                min_count=v.min_count,
                min_documents=v.min_documents,
                max_size=v.max_size,
            )
            return
        self.block_vocab = None
        if self.config.model.block_id_embedding:
            self.block_vocab = Vocabulary.fit(
                tables.lexicon,
                docs,
                min_count=b.min_count,
                min_documents=b.min_documents,
                max_size=b.max_size,
            )
        # Instruction tokens, counted over every executed block of the training windows.
        insn_docs = []
        for doc in docs:
            keys, counts = np.unique(doc, return_counts=True)
            insn_docs.append(expand(tables.block_flat, tables.block_offsets, np.repeat(keys, counts)))
        self.insn_vocab = Vocabulary.fit(
            tables.instruction_lexicon,
            insn_docs,
            min_count=v.min_count,
            min_documents=v.min_documents,
            max_size=v.max_size,
        )

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
    @torch.no_grad()
    def _window_outputs(
        self, net: nn.Module, encoder: WindowEncoder, store: WindowStore, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray | None]:
        was_training = net.training
        net.eval()
        logits = np.zeros(len(store), dtype=np.float64)
        scores = np.zeros(len(store), dtype=np.float64) if self.config.aggregation == "attention" else None
        for positions in length_batches(
            store.windows.lengths, self.config.predict_batch_size, None, bucket=True
        ):
            inputs, order = encoder.encode(store, positions, device)
            out_logits, out_scores = net(**inputs)
            logits[order] = out_logits.float().cpu().numpy()
            if scores is not None and out_scores is not None:
                scores[order] = out_scores.float().cpu().numpy()
        net.train(was_training)
        return logits, scores

    def predict_window_logits(self, data, windows: Windows) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw window logits and (attention models) attention scores, in the order of `windows`."""
        self._check_data(data)
        store = WindowStore.build(data, windows)
        return self._window_outputs(self.net, self._encoder(DatasetTables.of(data)), store, self.device)

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
            clf = target(
                LstmClassifierConfig(
                    model=model_config(**config["model"]),
                    window=WindowConfig.from_json(config["window"]),
                    aggregation=config["aggregation"],
                    train=TrainConfig(**config["train"]),
                    vocabulary=VocabularyConfig(**config["vocabulary"]),
                    block_vocabulary=VocabularyConfig(**config["block_vocabulary"]),
                    predict_batch_size=int(config["predict_batch_size"]),
                )
            )
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

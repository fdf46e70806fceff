"""`runtrace train`: fit an ISM or BSM LSTM (or, `--kind bsm-transformer`, the BSM transformer) on a
dataset and save it (safetensors + JSON), with the ONNX graphs `scan` and `serve` run
(`runtrace.models.export`).  `--kind ngram-lgbm` fits the evaluation's n-gram LightGBM instead
(`runtrace.models.ngram_checkpoint`; LightGBM's text model + JSON, and its trees converted to ONNX).

Runs on one process by default; `torchrun --nproc_per_node N runtrace train ...` trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA) and rank 0 writes the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail
from runtrace.cli.choices import (
    Aggregation,
    BlockEncoder,
    Device,
    ModelKind,
    Pooling,
    Representation,
    ValidationBy,
    Windowing,
)
from runtrace.cli.export_cmd import report_export
from runtrace.models.hyperparameters import (
    BsmLstmConfig,
    BsmTransformerConfig,
    IsmLstmConfig,
    TrainConfig,
    VocabularyConfig,
)
from runtrace.models.names import KINDS, NGRAM_KINDS

# Defaults come from the settings dataclasses (torch-free), so each is written once.
_T, _I, _B, _X, _V = TrainConfig, IsmLstmConfig, BsmLstmConfig, BsmTransformerConfig, VocabularyConfig


@app.command()
def train(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Dataset directory (runtrace dataset build)."),
    out: Path = typer.Option(..., "-o", "--out", help="Model directory to write."),
    representation: Representation = typer.Option(
        None, "--representation", "-r", help="Default: the dataset's."
    ),
    kind: ModelKind = typer.Option(
        None,
        "--kind",
        help="Model kind (default: the LSTM of the dataset's representation). ngram-lgbm and "
        "ngram-lgbm-monotone (every n-gram count can only raise the score) read either representation and "
        "take only --seed, --threads and --weigh-strata of the options below.",
    ),
    epochs: int = typer.Option(_T.epochs, help="At most this many epochs (early stopping may end sooner)."),
    batch_size: int = typer.Option(_T.batch_size, help="Windows per step."),
    lr: float = typer.Option(_T.lr, help="AdamW learning rate."),
    patience: int = typer.Option(
        _T.patience, help="Epochs without a better validation loss before stopping."
    ),
    val_fraction: float = typer.Option(
        _T.val_fraction, help="Share of the training files held out for early stopping."
    ),
    val_by: ValidationBy = typer.Option(
        ValidationBy.FILE, help="Draw validation files by file or by origin group."
    ),
    seed: int = typer.Option(_T.seed, help="Of the validation split and the weights (ngram-lgbm: trees)."),
    device: Device = typer.Option(Device.AUTO),
    threads: int = typer.Option(None, help="torch CPU threads per process (ngram-lgbm: LightGBM's, 1)."),
    windowing: Windowing = typer.Option(None, help="Default: the dataset's, else sampled."),
    window: int = typer.Option(None, help="Window length in tokens (ISM) or blocks (BSM)."),
    stride: int = typer.Option(None, help="Stride of sliding windows (default: the window length)."),
    windows_per_file: int = typer.Option(None, help="Sampled windows per file."),
    max_windows: int = typer.Option(None, help="Sliding: at most this many windows per file."),
    aggregation: Aggregation = typer.Option(Aggregation.MEAN, help="Window scores -> file score."),
    embed: int = typer.Option(_I.embed_dim, help="Instruction embedding size."),
    hidden: int = typer.Option(_I.hidden_size, help="LSTM hidden size."),
    layers: int = typer.Option(
        None, help=f"LSTM layers (default {_I.num_layers}) or transformer layers ({_X.num_layers})."
    ),
    bidirectional: bool = typer.Option(_I.bidirectional, "--bidirectional/--unidirectional", help="LSTM."),
    heads: int = typer.Option(_X.num_heads, help="Transformer: attention heads."),
    ff_dim: int = typer.Option(_X.ff_dim, help="Transformer: feed-forward width."),
    pooling: Pooling = typer.Option(Pooling(_I.pooling), help="Over the sequence model's outputs."),
    dropout: float = typer.Option(_I.dropout),
    block_encoder: BlockEncoder = typer.Option(
        BlockEncoder(_B.block_encoder), help="BSM: over a block's instructions."
    ),
    block_ids: bool = typer.Option(
        _B.block_id_embedding, "--block-ids/--no-block-ids", help="BSM: learned block-key embedding."
    ),
    min_documents: int = typer.Option(
        _V.min_documents, help="Vocabulary: a token must occur in this many training files."
    ),
    max_vocab: int = typer.Option(_V.max_size, help="Vocabulary: at most this many tokens."),
    weigh_strata: Path = typer.Option(
        None,
        "--weigh-strata",
        help="ngram-lgbm: corpus manifest whose match strata (arch, kind, toolchain, linker era) weigh the "
        "files, both classes equally in each stratum and strata of one class not at all (train on a dataset "
        "built without --match: matching by weighting).",
    ),
    log: Path = typer.Option(None, help="Epoch log (JSON lines); default: OUT/training_log.jsonl."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a sequence model (an LSTM, or the BSM transformer; validation split drawn from the files) or
    the n-gram LightGBM on all files of a dataset and save it, with the ONNX graphs `runtrace scan` runs."""
    from runtrace.models.estimator import make_classifier
    from runtrace.models.training_run import train_and_save
    from runtrace.represent.dataset import DatasetError, SequenceDataset
    from runtrace.represent.windows import WindowConfig

    try:
        data = SequenceDataset.load(dataset)
    except DatasetError as e:
        raise fail(str(e)) from None
    if representation is not None and representation != data.representation:
        raise fail(f"{dataset} is a {data.representation.upper()} dataset, not {representation}")
    if len(data) == 0:
        raise fail(f"{dataset}: no files")
    kind = kind or f"{data.representation}-lstm"
    if kind in NGRAM_KINDS:
        _train_ngram(kind, data, out, seed, threads, weigh_strata)
        return
    if weigh_strata is not None:
        kinds = ", ".join(NGRAM_KINDS)
        raise fail(f"--weigh-strata: only the n-gram kinds ({kinds}) take file weights, not {kind}")
    if KINDS[kind] != data.representation:
        raise fail(f"{kind} reads {KINDS[kind].upper()} datasets; {dataset} is {data.representation.upper()}")

    window_settings = {
        "mode": windowing,
        "length": window,
        "stride": stride,
        "count": windows_per_file,
        "max_windows": max_windows,
    }
    window_settings = {k: v for k, v in window_settings.items() if v is not None}
    layers = {} if layers is None else {"num_layers": layers}
    common = dict(pooling=pooling, dropout=dropout, **layers)
    lstm = dict(hidden_size=hidden, bidirectional=bidirectional, **common)
    blocks = dict(insn_embed_dim=embed, block_encoder=block_encoder, block_id_embedding=block_ids)
    try:
        if kind == "ism-lstm":
            model = IsmLstmConfig(embed_dim=embed, **lstm)
        elif kind == "bsm-lstm":
            model = BsmLstmConfig(**blocks, **lstm)
        else:
            model = BsmTransformerConfig(num_heads=heads, ff_dim=ff_dim, **blocks, **common)
        train_config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            val_fraction=val_fraction,
            val_by=val_by,
            seed=seed,
            device=device,
            num_threads=threads,
            progress=progress,
            log_path=str(log or out / "training_log.jsonl"),
        )
        vocabulary = VocabularyConfig(min_documents=min_documents, max_size=max_vocab)
        clf = make_classifier(
            data.representation,
            kind,
            model=model,
            # Options given on the command line change the dataset's own window settings.
            window=WindowConfig.from_json({**data.window_defaults, **window_settings})
            if window_settings
            else None,
            aggregation=aggregation,
            train=train_config,
            vocabulary=vocabulary,
            block_vocabulary=vocabulary,
        )
        summary = train_and_save(clf, data, out)
    except (TypeError, ValueError) as e:
        raise fail(str(e)) from None
    if summary is None:  # another rank than the one that saved
        return
    text = (
        f"{summary.kind}: {summary.epochs} epochs, best epoch {summary.best_epoch} "
        f"(val loss {summary.val_loss:.4f}, val AUC {summary.val_auc:.3f}), "
        f"{summary.tokens_per_s:,.0f} tokens/s; vocabulary {summary.vocabulary}"
    )
    if summary.blocks is not None:
        text += f", blocks {summary.blocks}"
    if summary.processes > 1:
        text += f"; {summary.processes} processes"
    console.print(text, highlight=False)
    console.print(f"model written to {out}", highlight=False)
    report_export(out)


def _train_ngram(
    kind: str, data, out: Path, seed: int, threads: int | None, strata_manifest: Path | None
) -> None:
    """`--kind ngram-lgbm` (or `ngram-lgbm-monotone`): the evaluation's n-gram LightGBM of that name on
    every file (weighted by match stratum with `--weigh-strata`), saved and converted to ONNX."""
    from runtrace.models.ngram_checkpoint import train_and_save

    weights, weighting = None, None
    if strata_manifest is not None:
        weights = _stratum_weights(data, strata_manifest)
        # the manifest by content, not by a path that means nothing on another machine
        digest = hashlib.sha256(strata_manifest.read_bytes()).hexdigest()
        weighting = f"match stratum (arch, kind, toolchain, linker era) of the manifest with sha256 {digest}"
    try:
        summary = train_and_save(
            data, out, seed=seed, n_jobs=threads or 1, weights=weights, weighting=weighting, kind=kind
        )
    except ValueError as e:
        raise fail(str(e)) from None
    if weights is not None:
        console.print(
            f"weighted by match stratum: {int((weights == 0).sum()):,} of {len(weights):,} files are in "
            "strata of one class and left out",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{summary.kind}: {summary.trees} trees on {summary.files:,} files; {summary.vocabulary:,} n-grams "
        f"counted, {summary.used:,} of them split on ({summary.tokens:,} distinct tokens); fitted in "
        f"{summary.seconds:.1f} s, {summary.tokens_per_s:,.0f} tokens/s",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"model written to {out}", highlight=False)
    report_export(out)


def _stratum_weights(data, manifest: Path):
    """Each dataset file's weight by its match stratum in `manifest` (`corpus.matching.stratum_weights`);
    a one-line failure when the manifest cannot be read or lacks some of the dataset's files."""
    import numpy as np

    from runtrace.corpus.manifest import ManifestError, read_manifest_rows
    from runtrace.corpus.matching import stratum, stratum_weights

    try:
        rows = {r["sha256"]: r for r in read_manifest_rows(manifest)}
    except ManifestError as e:
        raise fail(str(e)) from None
    shas = data.sha256s()
    missing = [s for s in shas if s not in rows]
    if missing:
        raise fail(
            f"{manifest}: {len(missing):,} of the dataset's {len(shas):,} files are not in it "
            f"(first {missing[0]})"
        )
    return stratum_weights([stratum(rows[s]) for s in shas], np.asarray(data.labels()))

"""Does training on every traced file, not only the metadata-matched draw, find more held-out malware?

The matched dataset (`dataset build --match`) keeps the packaging shortcut out of training and testing,
but it leaves most of the malware out (no benign look-alike).  This experiment forms the folds of a
protocol (by-family, by-origin or temporal) over the whole dataset (`dataset build` without --match)
and, per fold, trains n-gram LightGBM three times:

- arm `matched`: on the fold's training files that are in the matched dataset;
- arm `all`: on all of the fold's training files;
- arm `weighted`: on all of them, weighted so that in every stratum of the match (arch, kind, toolchain,
  linker era: `corpus.matching.stratum_weights`) both classes weigh the same, and strata of one class
  not at all: matching by weighting, which keeps every benign look-alike instead of one per malware file;

and scores each on the fold's *matched* test files only, where packaging metadata cannot tell the classes
apart (the audit).  Same folds, same test files, same model settings: only the training data (and its
weights) differs.  `--kind ngram-lgbm-monotone` runs the arms with the monotone trees instead.

    .venv/bin/python scripts/training_data_arms.py ALL_DATASET MATCHED_DATASET MANIFEST \\
        --protocol by-family -o arms.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from runtrace.corpus.manifest import ManifestError, read_manifest_rows
from runtrace.corpus.matching import stratum, stratum_weights
from runtrace.evaluate import protocols
from runtrace.evaluate.baselines import NgramCache
from runtrace.evaluate.manifest_join import join_manifest_file
from runtrace.evaluate.metrics import roc_auc, tpr_at_fpr
from runtrace.models.ngram import MAX_FEATURES, NGRAM_CLASSES, NgramLightGBM
from runtrace.represent.dataset import DatasetError, SequenceDataset

ARMS = ("matched", "all", "weighted")
PLANS = {
    protocols.BY_FAMILY: protocols.by_family,
    protocols.BY_ORIGIN: protocols.by_origin,
    protocols.TEMPORAL: protocols.temporal,
}


def run(
    data: SequenceDataset,
    matched: set[str],
    strata: list[tuple],
    protocol: str,
    log=print,
    kind: str = NgramLightGBM.kind,
    arms: tuple[str, ...] = ARMS,
    options: dict | None = None,
    fold_seed: int = 0,
    hashed_folds: bool = False,
) -> dict[str, list[dict]]:
    """Scores of each of `arms` on the matched test files of each fold; `strata` is each file's match
    stratum; `kind` the n-gram model every arm trains (`NGRAM_CLASSES`), with `options` (its keywords:
    `params`, the `candidates` it chooses among on each fold's training files, `max_features`);
    `fold_seed` draws the grouped protocols' folds (temporal has one split by date, and no draw);
    `hashed_folds` puts each group in the fold a hash of its name picks (`protocols`), so that runs on two
    tracer revisions' datasets share their folds group for group."""
    shas = np.asarray(data.sha256s(), dtype=object)
    y = np.asarray(data.labels(), dtype=np.int64)
    in_matched = np.array([s in matched for s in shas], dtype=bool)
    if protocol == protocols.TEMPORAL:
        plan = PLANS[protocol](data)
    else:
        plan = PLANS[protocol](data, seed=fold_seed, hashed=hashed_folds)
    cache = NgramCache(max_bytes=4 * 2**30)  # a file's counts do not depend on the fold
    scored: dict[str, list[dict]] = {arm: [] for arm in arms}
    for fold in plan.folds:
        test = fold.test[in_matched[fold.test]]
        weights = stratum_weights([strata[i] for i in fold.train], y[fold.train])
        training = (
            ("matched", fold.train[in_matched[fold.train]], None),
            ("all", fold.train, None),
            ("weighted", fold.train[weights > 0], weights[weights > 0]),
        )
        for arm, train, weight in (t for t in training if t[0] in arms):
            started = time.monotonic()
            model = NGRAM_CLASSES[kind](seed=0, cache=cache, **(options or {}))
            scores = model.fit(data, train, sample_weight=weight).predict_proba(data, test)
            if getattr(model, "selection_", None) is not None:
                chosen = model.selection_
                log(f"fold {fold.index} {arm}: chose {chosen.chosen} (inner scores {chosen.scores})")
            scored[arm] += [
                {"sha256": s, "label": int(label), "score": float(p), "fold": fold.index}
                for s, label, p in zip(shas[test], y[test], scores, strict=True)
            ]
            log(
                f"fold {fold.index} {arm}: trained on {len(train)} files ({int(y[train].sum())} malicious), "
                f"scored {len(test)} matched files, {time.monotonic() - started:.0f} s"
            )
    return scored


def summary(scored: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for arm, rows in scored.items():
        labels = np.array([r["label"] for r in rows])
        scores = np.array([r["score"] for r in rows])
        out[arm] = {
            "files": len(rows),
            "malicious": int(labels.sum()),
            "roc_auc": roc_auc(labels, scores),
            "tpr_at_fpr_1pct": tpr_at_fpr(labels, scores, 0.01),
        }
    return out


def write_predictions(
    scored: dict[str, list[dict]],
    protocol: str,
    representation: str,
    out: Path,
    kind: str = NgramLightGBM.kind,
) -> list[Path]:
    """Each arm's out-of-fold scores as OUT/<arm>/predictions.parquet, the columns `runtrace calibrate
    --report OUT/<arm>` reads (model `kind`, unit `file`): a model trained as an arm trains can be
    calibrated on that arm's scores.  Another protocol's rows already in the file are kept (this
    protocol's and model's are replaced), so runs of several protocols into one OUT give `calibrate
    --also-protocol` what it reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = []
    for arm, rows in scored.items():
        table = pa.table(
            {
                "representation": [representation] * len(rows),
                "protocol": [protocol] * len(rows),
                "model": [kind] * len(rows),
                "unit": ["file"] * len(rows),
                "sha256": [r["sha256"] for r in rows],
                "label": pa.array([r["label"] for r in rows], pa.int64()),
                "fold": pa.array([r["fold"] for r in rows], pa.int64()),
                "score": pa.array([r["score"] for r in rows], pa.float64()),
            }
        )
        path = out / arm / "predictions.parquet"
        if path.exists():
            before = pq.read_table(path)
            pairs = zip(before["protocol"].to_pylist(), before["model"].to_pylist(), strict=True)
            kept = [i for i, pair in enumerate(pairs) if pair != (protocol, kind)]
            table = pa.concat_tables([before.take(kept).select(table.column_names), table])
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        written.append(out / arm / "predictions.parquet")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("all_dataset", type=Path)
    parser.add_argument("matched_dataset", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--protocol", choices=list(PLANS), default="by-family")
    parser.add_argument("--kind", choices=list(NGRAM_CLASSES), default=NgramLightGBM.kind)
    parser.add_argument(
        "--arms", default=",".join(ARMS), help=f"Comma-separated, of {', '.join(ARMS)} (default: all)"
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="JSON file: scores and summary")
    parser.add_argument(
        "--predictions", type=Path, help="Also write each arm's scores as DIR/<arm>/predictions.parquet"
    )
    parser.add_argument("--params", type=json.loads, help="JSON: LightGBM settings replacing the model's")
    parser.add_argument(
        "--candidates",
        type=json.loads,
        help="JSON list of LightGBM settings to choose among on each fold's training files (nested)",
    )
    parser.add_argument(
        "--max-features", type=int, default=MAX_FEATURES, help="N-grams kept (default: %(default)s)"
    )
    parser.add_argument(
        "--fold-seed",
        type=int,
        default=0,
        help="Seed of the by-family and by-origin folds (default: 0); another seed measures how much "
        "of a difference between two runs the drawing of the folds alone makes",
    )
    parser.add_argument(
        "--hashed-folds",
        action="store_true",
        help="Each group (family, origin) in the fold a hash of its name picks, whatever else is in the "
        "set: runs on two tracer revisions' datasets then share their folds (without class stratification)",
    )
    opts = parser.parse_args(argv)
    arms = tuple(a for a in ARMS if a in opts.arms.split(","))
    unknown = set(opts.arms.split(",")) - set(ARMS)
    if unknown or not arms:
        raise SystemExit(f"error: --arms: choose from {', '.join(ARMS)}, not {opts.arms!r}")
    try:
        data = SequenceDataset.load(opts.all_dataset)
        matched = set(SequenceDataset.load(opts.matched_dataset).sha256s())
        join_manifest_file([("all", data)], opts.manifest)
        rows = {r["sha256"]: r for r in read_manifest_rows(opts.manifest)}
    except (DatasetError, ManifestError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    strata = [stratum(rows.get(sha, {})) for sha in data.sha256s()]
    scored = run(
        data,
        matched,
        strata,
        opts.protocol,
        log=lambda line: print(line, flush=True),
        kind=opts.kind,
        arms=arms,
        options={
            "params": opts.params,
            "candidates": opts.candidates,
            "max_features": opts.max_features,
        },
        fold_seed=opts.fold_seed,
        hashed_folds=opts.hashed_folds,
    )
    result = {
        "protocol": opts.protocol,
        "kind": opts.kind,
        "params": opts.params,
        "candidates": opts.candidates,
        "max_features": opts.max_features,
        "fold_seed": opts.fold_seed,
        "hashed_folds": opts.hashed_folds,
        "summary": summary(scored),
        "scores": scored,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1))
    if opts.predictions is not None:
        write_predictions(scored, opts.protocol, data.representation, opts.predictions, opts.kind)
    for arm, s in result["summary"].items():
        print(
            f"{opts.protocol} {opts.kind} {arm}: {s['files']} matched test files "
            f"({s['malicious']} malicious), ROC-AUC {s['roc_auc']:.3f}, "
            f"TPR at 1 % FPR {s['tpr_at_fpr_1pct']:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

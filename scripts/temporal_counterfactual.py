"""What the temporal split measures: the same fold with part of one test-side slice moved into training.

The temporal protocol trains on files first seen before a cut and tests on the later ones.  When a kind
of benign file only exists after the cut (on corpus v2's era build: Debian's MinGW builds of Wine, NSIS
and the GnuPG stack), the figure mixes "does it hold over time" with "does it know a source it never
saw".  This counterfactual separates the two: it moves half of the test side's benign files of one
compiler (`--compiler`, default mingw-gcc), drawn by origin group, into training, and scores what is left
of the test side twice with n-gram LightGBM: trained on the original training side, and on it plus the
moved files.  Repeated over `--draws` seeded draws.  It is not a protocol (the moved files come from
after the cut, and are siblings of files still tested): it bounds what data from that source could give.

It also reports, per class, the median share of a test file's distinct tokens that occur in the
training files: how familiar the held-out files are to the model.

    .venv/bin/python scripts/temporal_counterfactual.py DATASET MANIFEST -o counterfactual.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from runtrace.corpus.manifest import ManifestError, read_manifest_rows
from runtrace.evaluate import protocols
from runtrace.evaluate.baselines import NgramCache
from runtrace.evaluate.manifest_join import join_manifest_file
from runtrace.evaluate.metrics import roc_auc, tpr_at_fpr
from runtrace.models.ngram import NGRAM_CLASSES, NgramLightGBM
from runtrace.represent.dataset import DatasetError, SequenceDataset


def figures(y: np.ndarray, score: np.ndarray, compiler: np.ndarray) -> dict[str, dict]:
    """ROC-AUC and TPR at 1 % FPR on every file and per compiler (where both classes are present)."""
    out = {}
    for name in ["all", *sorted(set(compiler.tolist()))]:
        sel = np.ones(len(y), bool) if name == "all" else compiler == name
        if len(set(y[sel].tolist())) == 2:
            out[name] = {
                "files": int(sel.sum()),
                "roc_auc": roc_auc(y[sel], score[sel]),
                "tpr_at_fpr_1pct": tpr_at_fpr(y[sel], score[sel], 0.01),
            }
    return out


def familiarity(data, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Median share of each test file's distinct tokens that occur in some training file, per class."""
    seen = np.zeros(len(data.lexicon) + 1, dtype=bool)
    for i in train:
        seen[np.unique(data.sequence(int(i)))] = True
    y = np.asarray(data.labels())
    share = {0: [], 1: []}
    for i in test:
        tokens = np.unique(data.sequence(int(i)))
        if len(tokens):
            share[int(y[i])].append(float(seen[tokens].mean()))
    return {"benign": float(np.median(share[0])), "malicious": float(np.median(share[1]))}


def run(
    data,
    compiler: np.ndarray,
    groups: np.ndarray,
    moved_compiler: str,
    draws: int,
    log=print,
    kind: str = NgramLightGBM.kind,
) -> dict:
    """`kind`: the n-gram model both sides train (`NGRAM_CLASSES`)."""
    model = NGRAM_CLASSES[kind]
    y = np.asarray(data.labels())
    fold = protocols.temporal(data).folds[0]
    candidates = np.array(
        [i for i in fold.test if y[i] == 0 and compiler[i] == moved_compiler], dtype=np.int64
    )
    pool = sorted(set(groups[candidates].tolist()))
    if len(pool) < 2:
        raise ValueError(f"fewer than 2 origin groups of benign {moved_compiler} files on the test side")
    cache = NgramCache(max_bytes=3 * 2**30)
    original = model(seed=0, cache=cache).fit(data, fold.train)
    result = {"familiarity": familiarity(data, fold.train, fold.test), "draws": []}
    for seed in range(draws):
        chosen = set(np.random.default_rng(seed).choice(pool, size=len(pool) // 2, replace=False).tolist())
        moved = np.array([i for i in candidates if groups[i] in chosen], dtype=np.int64)
        test = np.setdiff1d(fold.test, moved)
        grown = model(seed=0, cache=cache).fit(data, np.concatenate([fold.train, moved]))
        draw = {
            "seed": seed,
            "moved_files": len(moved),
            "moved_groups": len(chosen),
            "test_files": len(test),
            "original": figures(y[test], original.predict_proba(data, test), compiler[test]),
            "with_moved": figures(y[test], grown.predict_proba(data, test), compiler[test]),
        }
        result["draws"].append(draw)
        log(
            f"draw {seed}: moved {len(moved)} files of {len(chosen)} groups; ROC-AUC on the rest "
            f"{draw['original']['all']['roc_auc']:.3f} -> {draw['with_moved']['all']['roc_auc']:.3f}"
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--compiler", default="mingw-gcc", help="Whose benign test files are moved")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--kind", choices=list(NGRAM_CLASSES), default=NgramLightGBM.kind)
    parser.add_argument("-o", "--out", type=Path, required=True, help="JSON file: the figures per draw")
    opts = parser.parse_args(argv)
    try:
        data = SequenceDataset.load(opts.dataset)
        join_manifest_file([("data", data)], opts.manifest)
        rows = {r["sha256"]: r for r in read_manifest_rows(opts.manifest)}
        shas = data.sha256s()
        compiler = np.array([rows.get(s, {}).get("compiler") or "unknown" for s in shas], dtype=object)
        groups = np.array([rows.get(s, {}).get("cv_group") or s for s in shas], dtype=object)
        log = lambda m: print(m, flush=True)  # noqa: E731
        result = run(data, compiler, groups, opts.compiler, opts.draws, log=log, kind=opts.kind)
    except (DatasetError, ManifestError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    opts.out.write_text(json.dumps(result, indent=1))
    print(f"familiarity (median share of a test file's tokens seen in training): {result['familiarity']}")


if __name__ == "__main__":
    main(sys.argv[1:])

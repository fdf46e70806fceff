"""Compare models' out-of-fold scores on the same held-out files: paired intervals, and one threshold carried
across protocols.

Each `--model NAME=PATH` names a directory holding `predictions.parquet` (what `runtrace evaluate` and
`scripts/training_data_arms.py --predictions` write); `{protocol}` in PATH is replaced by each protocol,
for runs that wrote one directory per protocol.  Per protocol, the files every model scored (by sha256
and fold) are compared with the first model's:

- ROC-AUC and TPR at `--target-fpr`, and the paired stratified-bootstrap interval of each model's
  difference from the first (the same resamples for every model);
- the threshold the `--calibrate-on` protocols' scores choose for `--target-fpr` (the highest any of them
  needs, as `runtrace calibrate --also-protocol` takes it), and each protocol's FPR and TPR at it.

    .venv/bin/python scripts/compare_predictions.py --protocols by-family,by-origin,temporal \\
        --model previous=reports/v2g-pred-{protocol}/matched \\
        --model monotone=reports/v2h-mono-{protocol}/weighted -o comparison.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from runtrace.evaluate.metrics import roc_auc, stratified_bootstrap_indices, tpr_at_fpr
from runtrace.evaluate.thresholds import threshold_for_fpr


def load_scores(path: Path, protocol: str) -> dict[tuple[str, int], tuple[int, float]]:
    """(sha256, fold) -> (label, score) of the file-level rows of `protocol` in PATH/predictions.parquet."""
    import pyarrow.parquet as pq

    file = path / "predictions.parquet"
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    rows = pq.read_table(file).to_pylist()
    scored = {
        (r["sha256"], int(r["fold"])): (int(r["label"]), float(r["score"]))
        for r in rows
        if r.get("protocol") == protocol and r.get("unit", "file") == "file"
    }
    if not scored:
        raise ValueError(f"{file}: no file-level scores for {protocol}")
    return scored


def compare(
    scores: dict[str, dict[str, dict]],
    calibrate_on: list[str],
    target_fpr: float = 0.01,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """`scores[protocol][model]` as `load_scores` returns it; the first model is the reference."""
    out: dict = {"protocols": {}, "threshold": {}}
    aligned: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for protocol, by_model in scores.items():
        names = list(by_model)
        common = sorted(set.intersection(*(set(s) for s in by_model.values())))
        if not common:
            raise ValueError(f"{protocol}: the models scored no file in common")
        y = np.array([by_model[names[0]][k][0] for k in common])
        aligned[protocol] = {n: (y, np.array([by_model[n][k][1] for k in common])) for n in names}
        idx = stratified_bootstrap_indices(y, resamples, seed)
        ref = aligned[protocol][names[0]][1]
        rows = {}

        def interval(values: list[float]) -> list[float]:
            return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

        for name in names:
            s = aligned[protocol][name][1]
            d_auc = [roc_auc(y[i], s[i]) - roc_auc(y[i], ref[i]) for i in idx]
            d_tpr = [tpr_at_fpr(y[i], s[i], target_fpr) - tpr_at_fpr(y[i], ref[i], target_fpr) for i in idx]
            rows[name] = {
                "roc_auc": roc_auc(y, s),
                "tpr_at_target_fpr": tpr_at_fpr(y, s, target_fpr),
                "roc_auc_minus_reference": interval(d_auc),
                "tpr_minus_reference": interval(d_tpr),
            }
        out["protocols"][protocol] = {"files": len(y), "malicious": int(y.sum()), "models": rows}
    missing = [p for p in calibrate_on if p not in aligned]
    if missing:
        raise ValueError(f"--calibrate-on {', '.join(missing)}: not among --protocols")
    for name in next(iter(aligned.values())):
        threshold = max(threshold_for_fpr(*aligned[p][name], target_fpr) for p in calibrate_on)
        at = {}
        for protocol, models in aligned.items():
            y, s = models[name]
            flagged = s >= threshold
            at[protocol] = {
                "false_positives": int((flagged & (y == 0)).sum()),
                "benign": int((y == 0).sum()),
                "tpr": float((flagged & (y == 1)).sum() / max(int(y.sum()), 1)),
            }
        out["threshold"][name] = {"raw": threshold, "at": at}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH ({protocol} allowed)")
    parser.add_argument("--protocols", default="by-family,by-origin,temporal")
    parser.add_argument("--calibrate-on", default="by-family", help="Comma-separated protocols")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("-o", "--out", type=Path, required=True, help="JSON file")
    opts = parser.parse_args(argv)
    models = []
    for spec in opts.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: --model {spec!r}: expected NAME=PATH")
        models.append((name, path))
    protocols = [p for p in opts.protocols.split(",") if p]
    try:
        scores = {
            p: {
                name: load_scores(Path(path.replace("{protocol}", p)).expanduser(), p)
                for name, path in models
            }
            for p in protocols
        }
        result = compare(scores, opts.calibrate_on.split(","), opts.target_fpr, opts.resamples)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1))
    for protocol, r in result["protocols"].items():
        print(f"{protocol}: {r['files']} files ({r['malicious']} malicious)")
        for name, m in r["models"].items():
            lo, hi = m["roc_auc_minus_reference"]
            tlo, thi = m["tpr_minus_reference"]
            print(
                f"  {name}: ROC-AUC {m['roc_auc']:.3f}, TPR {m['tpr_at_target_fpr']:.1%}; minus the first: "
                f"ROC-AUC [{lo:+.3f}, {hi:+.3f}], TPR [{tlo * 100:+.1f}, {thi * 100:+.1f}] points"
            )
    for name, t in result["threshold"].items():
        at = "; ".join(
            f"{p} {a['false_positives']}/{a['benign']} FP, TPR {a['tpr']:.1%}" for p, a in t["at"].items()
        )
        print(f"threshold of {name} ({t['raw']:.6f}): {at}")


if __name__ == "__main__":
    main(sys.argv[1:])

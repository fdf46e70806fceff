"""Write the random-weight models the ONNX parity tests load (tests/fixtures/models/parity/).

One model per configuration `runtrace scan` accepts (ISM and BSM; every block encoder; uni- and
bidirectional, one and two layers; every pooling; mean, max and attention aggregation; sampled, sliding
and first-n windows; blocks cut at max_block_tokens; the BSM transformer with each of its poolings).
Each is fitted for one epoch on real derived traces (the bundled demo traces), so its vocabularies hold
real tokens and real traces exercise real embedding rows; its weights are then drawn at random
(`runtrace.scan.synthetic.random_weight_model`), saved, and exported to ONNX.  Committed rather than
made in the tests because exporting takes 10-20 s a model; the tests compare these graphs with the torch
model loaded from the same weights.

    python scripts/make_parity_models.py [--out tests/fixtures/models/parity] [--only NAME ...]

`--only` writes the named models and leaves the others as they are (a new configuration does not
rewrite the committed graphs of the old ones).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import torch

from runtrace.represent.windows import WindowConfig
from runtrace.scan.synthetic import random_weight_model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "runtrace" / "data" / "demo"
FIT_TRACES = 16  # the first demo traces (by manifest order) the vocabularies are fitted on
MAX_VOCABULARY = 400  # tokens / blocks per vocabulary: keeps the fixtures small

CONFIGS = {
    "ism-mean": ("ism", {}),
    "ism-bi2-last-attention": ("ism", dict(bidirectional=True, num_layers=2, pooling="last", aggregation="attention")),
    "ism-uni2-max-max": ("ism", dict(num_layers=2, pooling="max", aggregation="max")),
    "ism-sliding": ("ism", dict(window=WindowConfig("sliding", length=40, stride=25, max_windows=6))),
    "bsm-mean": ("bsm", {}),
    "bsm-bi-attention": ("bsm", dict(bidirectional=True, aggregation="attention")),
    "bsm-uni2-max-max": ("bsm", dict(num_layers=2, pooling="max", aggregation="max")),
    "bsm-conv-bi-max-attention": (
        "bsm",
        dict(block_encoder="conv", bidirectional=True, pooling="max", aggregation="attention"),
    ),
    "bsm-max-noids-last-max": (
        "bsm",
        dict(block_encoder="max", block_id_embedding=False, pooling="last", aggregation="max"),
    ),
    "bsm-truncated-blocks": ("bsm", dict(max_block_tokens=3, window=WindowConfig("first-n", length=100))),
    "bsm-transformer-mean": ("bsm", dict(kind="bsm-transformer")),
    "bsm-transformer-conv-1layer-max-attention": (
        "bsm",
        dict(kind="bsm-transformer", block_encoder="conv", num_layers=1, pooling="max",
             aggregation="attention"),
    ),
}  # fmt: skip


def fit_traces() -> tuple[list[Path], list[int]]:
    manifest = pq.read_table(DEMO / "manifest.parquet").to_pylist()[:FIT_TRACES]
    paths = [DEMO / "traces" / f"{row['sha256']}.rtrace" for row in manifest]
    return paths, [int(row["label"] == "malicious") for row in manifest]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "models" / "parity")
    ap.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="Write only these models.")
    args = ap.parse_args()
    traces, labels = fit_traces()
    if not args.only:
        shutil.rmtree(args.out, ignore_errors=True)
    for k, (name, (representation, config)) in enumerate(CONFIGS.items()):
        if args.only and name not in args.only:
            continue
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        random_weight_model(
            out, representation, traces, labels, seed=k, max_vocabulary=MAX_VOCABULARY, **config
        )
        (out / "history.json").unlink(missing_ok=True)
        print(f"wrote {out}", file=sys.stderr)
    if args.only:
        with (args.out / "PROVENANCE.md").open("a") as f:
            f.write(
                f"\n`--only` on {date.today()} with torch {torch.__version__} (re)wrote "
                f"{', '.join(args.only)}.\n"
            )
        return 0
    (args.out / "PROVENANCE.md").write_text(
        "# parity: random-weight models for the ONNX parity tests\n\n"
        f"Made by `python scripts/make_parity_models.py` on {date.today()} with torch {torch.__version__}: "
        f"one model per configuration (the directory names), vocabularies fitted for one epoch on the first "
        f"{FIT_TRACES} bundled demo traces (derived data, no binaries), weights then drawn at random, saved "
        "and exported with `runtrace.models.export`.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

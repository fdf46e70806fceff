"""Training throughput of the sequence models at default sizes — the LSTMs with and without length
bucketing and sequence packing, and the BSM transformer beside the BSM LSTM — on synthetic data (so the
figure measures the models, not a corpus).

Windows are cut the way training cuts them (sliding, the default window length), from files of very
different lengths, so batches mix long and short windows: that is where bucketing and packing matter.
"Padded+exact" runs the fused LSTM kernel over the padded batch (exact: see `SequenceLstm`); "packed"
uses `pack_padded_sequence`, which on CPU drops to a much slower kernel.  The transformer has no
packed path; it runs on the same BSM data, windows and batches as the BSM LSTM's default row.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from runtrace.models import TrainConfig, make_classifier
from runtrace.represent.synthetic import synthetic_dataset
from runtrace.represent.windows import WindowConfig

# (label, length bucketing, pack_padded_sequence, files, epochs); the first is the CPU default.  The
# last epoch is timed (the first pays one-off set-up costs).  Packed runs use fewer files and one epoch:
# on CPU each of their steps costs so much that set-up does not show.  Packing without bucketing is
# left out: packing already skips the padding, and it is the slowest setting by far.
SETTINGS = [
    ("bucketing, padded+exact (CPU default)", True, False, 128, 2),
    ("no bucketing, padded+exact", False, False, 128, 2),
    ("bucketing, packed", True, True, 48, 1),
]
REPEATS = 2  # best of: other work on a shared machine only ever slows a run down


def _padding_share(lengths: np.ndarray, batch_size: int, bucket: bool) -> float:
    from runtrace.models.batching import length_batches

    batches = length_batches(lengths, batch_size, np.random.default_rng(0), bucket)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - float(lengths.sum()) / padded


def _measure(
    representation: str, bucket: bool, pack: bool, files: int, epochs: int, kind: str | None = None
) -> dict:
    data = synthetic_dataset(
        representation,
        files,
        min_length=10,
        max_length=3000,
        log_lengths=True,
        lexicon_size=400,
        n_blocks=2000,
        seed=0,
    )
    clf = make_classifier(representation, kind)
    length = 512 if representation == "ism" else 256
    clf.config.window = WindowConfig("sliding", length=length)
    if kind is None:
        clf.config.model = type(clf.config.model)(**{**clf.config.model.to_json(), "pack": pack})
    clf.config.train = TrainConfig(epochs=epochs, val_fraction=0.0, bucket=bucket, progress=False, seed=0)
    started = time.perf_counter()
    clf.fit(data, np.arange(len(data)))
    wall = time.perf_counter() - started
    last = clf.training_log_[-1]  # the epoch loop only (vocabularies and windows are built before it)
    windows = clf.windows(data, np.arange(len(data)))
    return {
        "tokens_per_s": last["tokens_per_s"],
        # Every window is a training sample once per epoch (no validation split here).
        "windows_per_s": len(windows) / max(last["seconds"], 1e-9),
        "epoch_s": last["seconds"],
        "tokens": last["tokens"],
        "padding": _padding_share(windows.lengths, clf.config.train.batch_size, bucket),
        "wall_s": wall,
    }


def run(threads: int = 1) -> dict:
    """threads: torch CPU threads.  One by default: the figure per core is stable, while two threads on
    a shared two-core machine lose more to descheduled oneDNN workers than they gain."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(threads)
    finally:
        torch.set_num_threads(previous)


def _run(threads: int) -> dict:
    for representation in ("ism", "bsm"):  # process-wide one-off costs (lazy imports) out of the figures
        _measure(representation, True, False, files=8, epochs=1)
    _measure("bsm", True, False, files=8, epochs=1, kind="bsm-transformer")
    rows, headline = [], {}

    def row(name: str, label: str, m: dict, base: float, pack: bool = False) -> dict:
        return {
            "model": name,
            "batching": label,
            "tokens/s": f"{m['tokens_per_s']:,.0f}",
            "windows/s": f"{m['windows_per_s']:,.1f}",
            "relative": f"{m['tokens_per_s'] / base:.2f}",
            "padding": "skipped" if pack else f"{m['padding']:.0%}",
            "epoch s": f"{m['epoch_s']:.2f}",
            "tokens/epoch": f"{m['tokens']:,}",
        }

    for representation, name in (("ism", "IsmLstm"), ("bsm", "BsmLstm")):
        base = None
        for label, bucket, pack, files, epochs in SETTINGS:
            repeats = 1 if pack else REPEATS
            runs = [_measure(representation, bucket, pack, files, epochs) for _ in range(repeats)]
            m = max(runs, key=lambda r: r["tokens_per_s"])
            base = base or m["tokens_per_s"]
            rows.append(row(name, label, m, base, pack))
            if (bucket, pack) == (True, False):
                unit = "tokens" if representation == "ism" else "blocks"
                headline[f"{name} training throughput (default sizes and batching)"] = (
                    f"{m['tokens_per_s']:,.0f} {unit}/s, {m['windows_per_s']:,.1f} windows/s"
                )
        if representation == "bsm":
            # The same data, windows and batching as the BSM LSTM's default row; relative to that row.
            label, bucket, pack, files, epochs = SETTINGS[0]
            runs = [_measure("bsm", bucket, pack, files, epochs, "bsm-transformer") for _ in range(REPEATS)]
            m = max(runs, key=lambda r: r["tokens_per_s"])
            rows.append(row("BsmTransformer", "bucketing, padded (CPU default)", m, base))
            headline["BsmTransformer training throughput (default sizes and batching)"] = (
                f"{m['tokens_per_s']:,.0f} blocks/s, {m['windows_per_s']:,.1f} windows/s "
                f"({m['tokens_per_s'] / base:.2f} x the BsmLstm's)"
            )
    headline["setting"] = (
        f"CPU, {threads} torch threads, batch 32, default model sizes (LSTMs: embed 32, hidden 64, 1 layer; "
        "transformer: block vectors 64, 2 layers, 4 heads, feed-forward 128); "
        "synthetic files of 10-3000 items (log-uniform), "
        "sliding windows (ISM 512 tokens, BSM 256 blocks); "
        f"last epoch timed (best of {REPEATS}), forward + backward + AdamW step"
    )
    return {
        **headline,
        "rows": rows,
        "notes": [
            "BSM throughput counts blocks (sequence steps); each block also runs the block encoder over its "
            "instructions, once per distinct block in a batch.",
            "windows/s: training samples per second (every window of the epoch is one sample; windows are "
            "up to 512 tokens or 256 blocks, shorter where a file is).",
        ],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))

"""Synthetic run traces with a planted "malicious" block, and tiny models trained on them.

For tests and benchmarks only: no malware, no emulator, fully deterministic.  Each trace is real x86
machine code (so disassembly, normalisation and block keys work as on emulated traces): a pool of small
blocks built from register-to-register instructions and ending in `ret`, executed in a random order
with a few API calls.  Malicious traces also execute the *planted* block (`rdtsc; cpuid; xor eax,
eax; ret`, a timing/VM check), which no benign trace contains — so a model that learns the task must rely
on that block, and an attribution method must point at it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtrace.trace.model import ApiCall, Arch, BasicBlock, StopReason, Trace, TraceMeta

BASE = 0x401000
BLOCK_SPACING = 0x40
PLANTED_CODE = [b"\x0f\x31", b"\x0f\xa2", b"\x31\xc0", b"\xc3"]  # rdtsc; cpuid; xor eax, eax; ret
PLANTED_ADDRESS = 0x402F00
APIS = ["kernel32.GetModuleHandleA", "kernel32.GetProcAddress", "kernel32.CreateFileA", "user32.MessageBoxA"]


def _instruction_pool() -> list[bytes]:
    pool = []
    for r in (0, 1, 2, 3, 5, 6, 7):  # every general register but esp
        pool += [bytes([0x40 + r]), bytes([0x48 + r]), bytes([0x50 + r]), bytes([0x58 + r])]
        pool.append(bytes([0x31, 0xC0 | (r << 3) | r]))  # xor r, r
        pool.append(bytes([0x83, 0xC0 | r, 0x10]))  # add r, 0x10
    pool.append(b"\x90")
    return pool


def _blocks(rng: np.random.Generator, count: int) -> list[list[bytes]]:
    pool = _instruction_pool()
    blocks: list[list[bytes]] = []
    seen: set[bytes] = set()
    while len(blocks) < count:
        code = [pool[i] for i in rng.integers(0, len(pool), size=int(rng.integers(2, 6)))] + [b"\xc3"]
        if b"".join(code) not in seen:
            seen.add(b"".join(code))
            blocks.append(code)
    return blocks


def synthetic_trace(
    malicious: bool,
    seed: int,
    n_visits: int = 240,
    n_blocks: int = 24,
    plants: int = 8,
    api_calls: int = 6,
    name: str = "",
) -> Trace:
    """One trace; the block pool is the same for every seed (as one compiler's runtime code would be),
    the visit order and API calls differ."""
    pool = _blocks(np.random.default_rng(12345), n_blocks)
    rng = np.random.default_rng(seed)
    blocks = [
        BasicBlock(BASE + i * BLOCK_SPACING, b"".join(code), tuple(len(c) for c in code))
        for i, code in enumerate(pool)
    ]
    visits = rng.integers(0, n_blocks, size=n_visits)
    if malicious:
        blocks.append(
            BasicBlock(PLANTED_ADDRESS, b"".join(PLANTED_CODE), tuple(len(c) for c in PLANTED_CODE))
        )
        visits[rng.choice(n_visits, size=plants, replace=False)] = len(blocks) - 1
    positions = np.sort(rng.choice(n_visits, size=min(api_calls, n_visits), replace=False))
    calls = [
        ApiCall(int(p), APIS[int(rng.integers(len(APIS)))], BASE + 0x1000 + int(p))
        for p in positions.tolist()
    ]
    sha = f"{seed:0>8x}{int(malicious):0>56x}"
    meta = TraceMeta(
        sha256=sha,
        arch=Arch.X86,
        source="synthetic",
        stop_reason=StopReason.EXITED,
        file_name=name or f"synthetic-{'mal' if malicious else 'ben'}-{seed}.exe",
        tracer_version="synthetic",
    )
    return Trace(meta=meta, blocks=blocks, visits=visits.astype(np.uint32), api_calls=calls)


def synthetic_corpus(n: int = 40, seed: int = 0, **kwargs) -> tuple[list[Trace], list[int]]:
    """n traces, alternately benign and malicious."""
    labels = [i % 2 for i in range(n)]
    traces = [synthetic_trace(bool(label), seed * 10_000 + i, **kwargs) for i, label in enumerate(labels)]
    return traces, labels


def train_tiny_model(
    out_dir: str | Path,
    traces: list[Trace] | None = None,
    labels: list[int] | None = None,
    representation: str = "bsm",
    epochs: int = 12,
    seed: int = 0,
    small: bool = True,
    kind: str | None = None,
    **model_overrides,
):
    """Train a model of `kind` (default: the representation's LSTM) on synthetic traces and save it with
    its ONNX graphs, as `runtrace train` does (needs torch).  `small=False` keeps the default layer sizes
    (for latency measurements, where what matters is the size, not the accuracy)."""
    import torch

    from runtrace.models.estimator import make_classifier
    from runtrace.models.export import export_onnx
    from runtrace.models.hyperparameters import (
        BsmLstmConfig,
        BsmTransformerConfig,
        IsmLstmConfig,
        TrainConfig,
    )
    from runtrace.represent.dataset import build_dataset
    from runtrace.represent.windows import WindowConfig

    torch.set_num_threads(1)
    if traces is None:
        traces, labels = synthetic_corpus(40, seed)
    data = build_dataset(traces, labels, representation=representation)
    if kind == "bsm-transformer":
        sizes = dict(insn_embed_dim=8, block_dim=16, num_heads=2, ff_dim=32) if small else {}
        model = BsmTransformerConfig(**{"dropout": 0.0, **sizes, **model_overrides})
    elif representation == "bsm":
        sizes = dict(insn_embed_dim=8, block_dim=16, hidden_size=16) if small else {}
        model = BsmLstmConfig(**{"dropout": 0.0, **sizes, **model_overrides})
    else:
        sizes = dict(embed_dim=8, hidden_size=16) if small else {}
        model = IsmLstmConfig(**{"dropout": 0.0, **sizes, **model_overrides})
    window = WindowConfig("sampled", length=64, count=4) if small else None
    train = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, patience=epochs, seed=seed, progress=False)
    clf = make_classifier(representation, kind, model=model, window=window, train=train)
    clf.fit(data, np.arange(len(data)))
    clf.save(out_dir)
    export_onnx(out_dir)
    return clf


MODEL_KEYS = {"embed_dim", "insn_embed_dim", "block_dim", "hidden_size", "num_layers", "bidirectional",
              "pooling", "block_encoder", "block_id_embedding", "max_block_tokens", "num_heads",
              "ff_dim"}  # fmt: skip


def random_weight_model(
    out_dir: str | Path,
    representation: str,
    traces: list | None = None,
    labels: list[int] | None = None,
    seed: int = 0,
    export: bool = True,
    max_vocabulary: int | None = None,
    kind: str | None = None,
    **config,
):
    """A model with the given configuration and random (not trained) weights, large enough that its
    outputs vary, saved to `out_dir` (with its ONNX graphs unless export=False); needs torch.

    One epoch of fitting on `traces` (default: 8 synthetic ones) gives it real vocabularies; the weights
    are then drawn again, so every embedding row and gate matters.  `config`: layer settings
    (`MODEL_KEYS`), `window` and `aggregation`; `kind`: the model kind (default: the representation's
    LSTM).  For the tests that compare the exported graphs with
    torch, where a random network exercises more of the arithmetic than a trained one."""
    import torch

    from runtrace.models.estimator import VocabularyConfig, make_classifier
    from runtrace.models.hyperparameters import (
        BsmLstmConfig,
        BsmTransformerConfig,
        IsmLstmConfig,
        TrainConfig,
    )
    from runtrace.models.layers import redraw_weights
    from runtrace.represent.dataset import build_dataset
    from runtrace.represent.windows import WindowConfig

    torch.set_num_threads(1)
    if traces is None:
        traces, labels = synthetic_corpus(8, seed=seed)
    data = build_dataset(traces, labels, representation=representation)
    model_args = {k: v for k, v in config.items() if k in MODEL_KEYS}
    sizes = {"hidden_size": 8}
    if kind == "bsm-transformer":
        sizes = {"insn_embed_dim": 6, "block_dim": 12, "num_heads": 2, "ff_dim": 16}
        model = BsmTransformerConfig(**{**sizes, **model_args})
    elif representation == "bsm":
        model = BsmLstmConfig(**{"insn_embed_dim": 6, "block_dim": 10, **sizes, **model_args})
    else:
        model = IsmLstmConfig(**{"embed_dim": 6, **sizes, **model_args})
    vocabulary = VocabularyConfig(min_documents=1, max_size=max_vocabulary)
    clf = make_classifier(
        representation,
        kind,
        model=model,
        window=config.get("window", WindowConfig("sampled", length=48, count=3)),
        aggregation=config.get("aggregation", "mean"),
        train=TrainConfig(epochs=1, batch_size=8, progress=False, seed=seed, val_fraction=0.0),
        vocabulary=vocabulary,
        block_vocabulary=vocabulary,
    )
    clf.fit(data, np.arange(len(data)))
    redraw_weights(clf.net_, torch.Generator().manual_seed(seed), 0.6)
    clf.save(out_dir)
    if export:
        from runtrace.models.export import export_onnx

        export_onnx(out_dir)
    return clf

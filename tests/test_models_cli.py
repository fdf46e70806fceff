"""`runtrace dataset build | info` and `runtrace train` end to end on small synthetic traces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import runtrace.cli  # noqa: F401  (registers every command)
from runtrace.cli.app import app
from runtrace.models import load_model
from runtrace.represent.dataset import SequenceDataset
from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.formats.native import save_trace
from runtrace.trace.model import ApiCall, Arch, StopReason, Trace, TraceMeta

runner = CliRunner()

BENIGN_LOOP = [(0x402000, b"\x40"), (0x402001, b"\x83\xf8\x03"), (0x402004, b"\x75\xfa")]  # inc/cmp/jne
MALICIOUS_LOOP = [(0x403000, b"\x31\xc0"), (0x403002, b"\x48"), (0x403003, b"\x75\xfb")]  # xor/dec/jne
PROLOGUE = [(0x401000, b"\x55"), (0x401001, b"\x89\xe5"), (0x401003, b"\xe8\xf8\x0f\x00\x00")]


def _trace(i: int, malicious: bool) -> Trace:
    builder = BlockBuilder(32)
    for _ in range(1 + i % 3):
        for address, data in PROLOGUE:
            builder.add(address, data)
        for address, data in MALICIOUS_LOOP if malicious else BENIGN_LOOP:
            builder.add(address, data)
    blocks, visits, threads = builder.finish()
    api = [
        ApiCall(0, "kernel32.VirtualAlloc", 0x401008, args=(0, 0x1000, 0x3000, 0x40))
        if malicious
        else ApiCall(0, "kernel32.GetVersion", 0x401008)
    ]
    meta = TraceMeta(f"{i:064x}", Arch.X86, "emulator", stop_reason=StopReason.EXITED)
    return Trace(meta, blocks, visits, api, threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    traces = root / "traces"
    traces.mkdir()
    rows = []
    for i in range(16):
        malicious = i % 2 == 1
        save_trace(_trace(i, malicious), traces / f"{i:064x}.rtrace")
        rows.append(
            {
                "sha256": f"{i:064x}",
                "label": "malicious" if malicious else "benign",
                "origin_group": f"g{i // 4}",
                "arch": "i386",
                "kind": "exe",
            }
        )
    rows.append({"sha256": "f" * 64, "label": "grayware", "origin_group": "x", "arch": "i386", "kind": "exe"})
    rows.append({"sha256": "e" * 64, "label": "benign", "origin_group": "y", "arch": "i386", "kind": "exe"})
    manifest = root / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    return traces, manifest


@pytest.mark.parametrize(
    ("representation", "kind"),
    [("ism", None), ("bsm", None), pytest.param("bsm", "bsm-transformer", marks=pytest.mark.slow)],
)
def test_dataset_build_and_train(tmp_path: Path, corpus, representation: str, kind: str | None) -> None:
    torch.set_num_threads(1)
    traces, manifest = corpus
    ds = tmp_path / "ds"
    args = ["dataset", "build", "-r", representation, "--traces", str(traces), "--manifest", str(manifest)]
    result = runner.invoke(app, [*args, "-o", str(ds), "--window", "16", "--windowing", "sliding"])
    assert result.exit_code == 0, result.output
    data = SequenceDataset.load(ds)
    assert len(data) == 16  # grayware and the trace-less row are left out
    assert set(data.groups()) == {"g0", "g1", "g2", "g3"}
    assert data.window_defaults == {"mode": "sliding", "length": 16}
    assert any(t.startswith("api:") for t in data.instruction_lexicon)

    result = runner.invoke(app, ["dataset", "info", str(ds)])
    assert result.exit_code == 0 and '"files": 16' in result.output

    model_dir = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(ds),
            "-o",
            str(model_dir),
            "--epochs",
            "2",
            "--no-progress",
            "--lr",
            "0.01",
            *(["--kind", kind] if kind else []),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model written" in result.output and "ONNX graphs (opset" in result.output
    clf = load_model(model_dir)
    assert clf.config.window.length == 16 and clf.config.window.mode == "sliding"
    proba = clf.predict_proba(data, np.arange(16))
    assert proba.shape == (16,)
    # The graphs `train` wrote are what `scan` runs: recorded, loadable, and in agreement with torch.
    from runtrace.scan.onnxmodel import OnnxModel

    config = json.loads((model_dir / "config.json").read_text())
    assert set(config["onnx"]["graphs"]) == {"items", "windows", "gradient"}
    assert max(config["onnx"]["max_difference_from_torch"].values()) < 1e-4
    assert OnnxModel.load(model_dir).kind == (kind or f"{representation}-lstm")
    log = [json.loads(line) for line in (model_dir / "training_log.jsonl").read_text().splitlines()]
    assert len(log) == 2


def test_api_switch_and_normalisation(tmp_path: Path, corpus) -> None:
    traces, manifest = corpus
    out = tmp_path / "ds"
    result = runner.invoke(
        app,
        ["dataset", "build", "-r", "ism", "-t", str(traces), "-m", str(manifest), "-o", str(out)]
        + ["--no-api", "--normalisation", "mnemonic"],
    )
    assert result.exit_code == 0, result.output
    data = SequenceDataset.load(out)
    assert data.api is False and not any(t.startswith("api:") for t in data.lexicon)
    assert set(data.lexicon) == {"push", "mov", "call", "inc", "cmp", "jne", "xor", "dec"}


def test_dataset_build_again_is_up_to_date_until_inputs_or_settings_change(tmp_path: Path, corpus) -> None:
    traces, manifest = corpus
    out = tmp_path / "ds"
    build = ["dataset", "build", "-r", "ism", "-t", str(traces), "-m", str(manifest), "-o", str(out)]
    assert runner.invoke(app, build).exit_code == 0
    written = (out / "tokens.npy").stat().st_mtime_ns
    again = runner.invoke(app, build)
    assert again.exit_code == 0 and "up to date" in again.output
    assert (out / "tokens.npy").stat().st_mtime_ns == written
    # Other settings, a changed trace file, or --overwrite: built again.
    other = runner.invoke(app, [*build, "--normalisation", "mnemonic"])
    assert other.exit_code == 0 and "up to date" not in other.output
    forced = runner.invoke(app, [*build, "--normalisation", "mnemonic", "--overwrite"])
    assert forced.exit_code == 0 and "up to date" not in forced.output
    trace = sorted(traces.glob("*.rtrace"))[0]
    os.utime(trace, ns=(trace.stat().st_atime_ns, trace.stat().st_mtime_ns + 10**9))
    changed = runner.invoke(app, [*build, "--normalisation", "mnemonic"])
    assert changed.exit_code == 0 and "up to date" not in changed.output


def test_argument_tokens_are_a_build_setting(tmp_path: Path, corpus) -> None:
    """`--api-args` is recorded in the dataset, is part of what makes it up to date, and needs API tokens."""
    traces, manifest = corpus
    out = tmp_path / "ds"
    build = ["dataset", "build", "-r", "ism", "-t", str(traces), "-m", str(manifest), "-o", str(out)]
    assert runner.invoke(app, build).exit_code == 0
    assert SequenceDataset.load(out).api_args is False
    with_args = runner.invoke(app, [*build, "--api-args"])
    assert with_args.exit_code == 0 and "up to date" not in with_args.output
    data = SequenceDataset.load(out)
    assert data.api_args is True and "arg:mem:rwx" in data.lexicon
    assert '"api_args": true' in runner.invoke(app, ["dataset", "info", str(out)]).output
    again = runner.invoke(app, [*build, "--api-args"])
    assert again.exit_code == 0 and "up to date" in again.output
    back = runner.invoke(app, build)
    assert back.exit_code == 0 and "up to date" not in back.output
    assert SequenceDataset.load(out).api_args is False
    refused = runner.invoke(app, [*build, "--no-api", "--api-args", "--overwrite"])
    assert refused.exit_code != 0 and "--api-args" in refused.output and "Traceback" not in refused.output


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--dataset", "/nonexistent", "-o", "/tmp/x"],
        ["dataset", "build", "-r", "xyz", "-m", "/nonexistent", "-o", "/tmp/x"],
        ["dataset", "build", "-r", "ism", "-m", "/nonexistent.parquet", "-o", "/tmp/x"],
        ["dataset", "info", "/nonexistent"],
    ],
)
def test_errors_are_one_line(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_train_refuses_the_wrong_representation(tmp_path: Path, corpus) -> None:
    traces, manifest = corpus
    runner.invoke(
        app, ["dataset", "build", "-r", "ism", "-t", str(traces), "-m", str(manifest), "-o", str(tmp_path)]
    )
    result = runner.invoke(app, ["train", "-d", str(tmp_path), "-r", "bsm", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "ISM dataset" in result.output
    result = runner.invoke(
        app, ["train", "-d", str(tmp_path), "--kind", "bsm-transformer", "-o", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "bsm-transformer reads BSM datasets" in result.output


def test_export_refuses_what_is_not_a_model_in_one_line(tmp_path: Path) -> None:
    for target in (tmp_path / "absent", tmp_path):
        result = runner.invoke(app, ["export", str(target)])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert "not a runtrace model" in lines[0]


@pytest.mark.slow
def test_export_writes_again_the_graphs_of_a_saved_model(tmp_path: Path) -> None:
    """`runtrace export` on a model saved without graphs writes them, byte for byte the committed ones
    (export is deterministic for one torch version), and records them so `scan` loads them."""
    import shutil

    from runtrace.models.spec import GRAPHS
    from runtrace.scan.onnxmodel import OnnxModel
    from scan_support import tiny_model_dir

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    committed = config.pop("onnx")
    (model / "config.json").write_text(json.dumps(config))
    for name in GRAPHS.values():
        (model / name).unlink()
    result = runner.invoke(app, ["export", str(model)])
    assert result.exit_code == 0, result.output
    assert json.loads((model / "config.json").read_text())["onnx"]["graphs"] == committed["graphs"]
    assert OnnxModel.load(model).kind == "bsm-lstm"

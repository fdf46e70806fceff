"""Loading a model for scanning: the graphs come from the model directory and match what config.json
records, anything else is a one-line error; and the whole scan path runs without torch."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.models.spec import CONFIG, GRAPHS, VOCABULARY, WEIGHTS
from runtrace.scan.onnxmodel import ModelError, OnnxModel
from scan_support import TINY_MODEL, tiny_model_dir, write_traces

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), out)
    return out


def _config(model: Path) -> dict:
    return json.loads((model / CONFIG).read_text())


def _record(model: Path, role: str, data: bytes) -> None:
    """Write a graph and record its sha256, as an export would (so only the content is wrong)."""
    (model / GRAPHS[role]).write_bytes(data)
    config = _config(model)
    config["onnx"]["graphs"][role] = hashlib.sha256(data).hexdigest()
    (model / CONFIG).write_text(json.dumps(config))


def _refused(model: Path, match: str) -> str:
    with pytest.raises(ModelError, match=match) as info:
        OnnxModel.load(model)
    message = str(info.value)
    assert "\n" not in message and str(model) in message
    return message


def test_the_committed_graphs_load_and_name_the_weights_they_came_from(model: Path) -> None:
    loaded = OnnxModel.load(model)
    assert loaded.kind == "bsm-lstm"
    assert loaded.weights_sha256 == hashlib.sha256((model / WEIGHTS).read_bytes()).hexdigest()


def test_a_missing_graph_is_a_one_line_error(model: Path) -> None:
    (model / GRAPHS["windows"]).unlink()
    assert "runtrace export" in _refused(model, r"model\.windows\.onnx missing")


def test_a_graph_that_does_not_match_its_recorded_sha256_is_refused(model: Path) -> None:
    path = model / GRAPHS["gradient"]
    path.write_bytes(path.read_bytes() + b"\0")
    _refused(model, r"model\.gradient\.onnx does not match the sha256 recorded in config\.json")


def test_a_model_without_recorded_graphs_says_to_export_it(model: Path) -> None:
    config = _config(model)
    del config["onnx"]
    (model / CONFIG).write_text(json.dumps(config))
    _refused(model, r"no ONNX graphs recorded in config\.json; run `runtrace export")
    config["onnx"] = _config(tiny_model_dir())["onnx"]
    del config["onnx"]["graphs"]["windows"]
    (model / CONFIG).write_text(json.dumps(config))
    _refused(model, "config.json records no windows graph")


def test_graphs_exported_with_another_vocabulary_are_refused(model: Path) -> None:
    vocabulary = json.loads((model / VOCABULARY).read_text())
    vocabulary["instructions"]["tokens"].append("nop")
    (model / VOCABULARY).write_text(json.dumps(vocabulary))
    _refused(model, r"exported with another vocabulary\.json")


def test_a_recorded_graph_onnx_runtime_cannot_run_is_a_one_line_error(model: Path) -> None:
    _record(model, "items", b"not an onnx graph")
    _refused(model, r"model\.items\.onnx is not a graph ONNX Runtime can run")


def test_a_graph_cannot_read_tensors_from_outside_the_model_directory(model: Path, tmp_path: Path) -> None:
    """ONNX lets a graph keep its tensors in other files ("external data"); graphs are handed to ONNX
    Runtime as bytes, which refuses them, so no path inside a graph is ever opened."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    secret = tmp_path / "outside.bin"
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["tokens", "w"], ["vectors"])], "g",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, [4])], [weight],
    )  # fmt: skip
    proto = helper.make_model(graph)
    staging = tmp_path / "staging.onnx"
    onnx.save_model(proto, staging, save_as_external_data=True, location="outside.bin", size_threshold=0)
    assert secret.exists()
    _record(model, "items", staging.read_bytes())
    _refused(model, r"model\.items\.onnx is not a graph ONNX Runtime can run")


def test_other_broken_directories(tmp_path: Path, model: Path) -> None:
    _refused(tmp_path / "absent", "no such model directory")
    (model / CONFIG).write_text('{"format": "something-else", "version": 1}')
    _refused(model, "unsupported model format something-else v1")
    (model / CONFIG).unlink()
    _refused(model, r"not a runtrace model \(config\.json missing\)")


def test_scan_reports_a_broken_model_in_one_line_and_exits_2(model: Path, tmp_path: Path) -> None:
    traces = write_traces(tmp_path / "traces", {"t": (True, 1, {})})
    (model / GRAPHS["items"]).unlink()
    result = CliRunner().invoke(app, ["scan", "--model", str(model), str(traces["t"])])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.items.onnx missing" in lines[0]


def test_the_scan_path_never_imports_torch(tmp_path: Path, cli32: Path) -> None:
    """A fresh interpreter loads the command line, a sequence model and scans a PE file (emulated in a
    tracer child) and a trace file with explanations: torch is never imported, ONNX Runtime is (the
    n-gram kind has its own test in test_ngram_model.py)."""
    traces = write_traces(tmp_path / "traces", {"t": (True, 1, {})})
    code = (
        "import sys\n"
        "import runtrace.cli\n"
        "from runtrace.scan.calibration import read_calibration\n"
        "from runtrace.scan.inputs import iter_inputs\n"
        "from runtrace.scan.onnxmodel import OnnxModel\n"
        "from runtrace.scan.scanner import Scanner, ScanOptions\n"
        "from runtrace.trace.settings import TracerSettings\n"
        f"model_dir = __import__('pathlib').Path({str(TINY_MODEL)!r})\n"
        "scanner = Scanner(OnnxModel.load(model_dir), read_calibration(model_dir),\n"
        "                  ScanOptions(workers=1, tracer=TracerSettings(max_instructions=50_000),\n"
        "                              min_instructions=1))\n"
        f"inputs = list(iter_inputs([__import__('pathlib').Path({str(cli32)!r}), "
        f"__import__('pathlib').Path({str(traces['t'])!r})]))\n"
        "results = scanner.scan(inputs)\n"
        "assert [r.status for r in results] == ['ok', 'ok'], [r.reason for r in results]\n"
        "assert all(r.explanation.towards_malicious or r.explanation.towards_benign for r in results)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


def test_scan_encodes_traces_the_way_the_models_data_was_built(model: Path, monkeypatch) -> None:
    """A model trained with argument tokens (`data.api_args` in config.json) is given them when it scans;
    one that does not record the setting (every model from before it) is not."""
    import runtrace.scan.scanner as scanner_module
    from runtrace.scan.calibration import read_calibration
    from runtrace.scan.scanner import Scanner, ScanOptions
    from runtrace.scan.synthetic import synthetic_trace
    from runtrace.trace.model import ApiCall

    trace = synthetic_trace(True, 5)
    trace.api_calls.append(ApiCall(2, "kernel32.VirtualProtect", 0x401000, args=(0x402000, 0x100, 0x40, 0)))
    seen = []
    encode = scanner_module.encode_for_model
    monkeypatch.setattr(scanner_module, "encode_for_model", lambda *a: seen.append(encode(*a)) or seen[-1])

    def tokens_scanned(directory: Path) -> list[str]:
        loaded = OnnxModel.load(directory)
        scanner = Scanner(loaded, read_calibration(directory), ScanOptions(min_instructions=1, explain=3))
        result = scanner.analyse_trace(trace, "t.exe", None, "trace")
        assert result.probability is not None
        enc = seen[-1].encoded
        return [enc.lexicon[i] for i in enc.sequence.tolist()]

    assert OnnxModel.load(model).api_args is False
    assert not any(t.startswith("arg:") for t in tokens_scanned(model))
    config = _config(model)
    config["data"]["api_args"] = True
    (model / CONFIG).write_text(json.dumps(config))
    assert OnnxModel.load(model).api_args is True
    tokens = tokens_scanned(model)
    at = tokens.index("api:kernel32.virtualprotect")
    assert tokens[at + 1] == "arg:mem:rwx"

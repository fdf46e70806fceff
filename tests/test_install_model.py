"""`make install-default-model` (scripts/install_model.py) ships the files the model's kind needs, its
calibration and its similarity index, and nothing when something is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtrace.models.ngram_checkpoint import train_and_save
from runtrace.models.ngram_export import export_ngram_onnx
from runtrace.models.spec import HISTORY
from runtrace.represent.dataset import build_dataset
from runtrace.scan.calibration import write_calibration
from runtrace.scan.kinds import load_model
from runtrace.scan.synthetic import synthetic_corpus
from scan_support import tiny_model_dir
from script_support import load_script


def _install():
    return load_script("install_model").install


def _with_calibration_and_index(model: Path) -> Path:
    write_calibration(model, 0.7, 0.01, "test", "v1")
    (model / "similar").mkdir()
    (model / "similar" / "index.json").write_text("{}")
    (model / "training_log.jsonl").write_text("")  # not shipped
    return model


def test_an_n_gram_model_is_installed_with_its_own_files(tmp_path: Path) -> None:
    traces, labels = synthetic_corpus(n=30)
    source = tmp_path / "work" / "default"
    train_and_save(build_dataset(traces, labels, representation="bsm"), source)
    export_ngram_onnx(source)
    _with_calibration_and_index(source)
    (source / "model.safetensors").write_bytes(b"left by an earlier LSTM in the same directory")
    dest = tmp_path / "data" / "default"
    dest.mkdir(parents=True)
    (dest / "model.items.onnx").write_bytes(b"the previous default's")
    copied = _install()(source, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["config.json", "vocabulary.json", "model.lgbm.txt", "model.onnx", "calibration.json", "similar"]
    )
    assert copied[-1] == "similar/" and (dest / "similar" / "index.json").exists()
    assert load_model(dest).kind == "ngram-lgbm"


def test_a_sequence_model_is_installed_as_before(tmp_path: Path) -> None:
    source = tmp_path / "lstm"
    shutil.copytree(tiny_model_dir(), source)
    (source / HISTORY).write_text(json.dumps([]))
    _with_calibration_and_index(source)
    dest = tmp_path / "dest"
    _install()(source, dest)
    expected = ["config.json", "vocabulary.json", "model.safetensors", HISTORY, "model.items.onnx",
                "model.windows.onnx", "model.gradient.onnx", "calibration.json", "similar"]  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == sorted(expected)


def test_nothing_is_touched_when_a_file_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "lstm"
    shutil.copytree(tiny_model_dir(), source)
    _with_calibration_and_index(source)  # no history.json
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("x")
    with pytest.raises(SystemExit, match="a bsm-lstm model needs history.json, which it lacks"):
        _install()(source, dest)
    assert [p.name for p in dest.iterdir()] == ["keep"]

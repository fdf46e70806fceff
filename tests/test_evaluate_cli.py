"""`runtrace evaluate` end to end on small synthetic datasets (no traces, no malware)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import runtrace.cli  # noqa: F401  (registers every command)
from runtrace.cli.app import app
from runtrace.represent.synthetic import synthetic_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    ism = synthetic_dataset("ism", 30, seed=1).save(root / "ism")
    bsm = synthetic_dataset("bsm", 30, seed=1).save(root / "bsm")
    return ism, bsm


def _evaluate(*args: str):
    return runner.invoke(app, ["evaluate", "--no-progress", "--bootstrap", "20", *args])


def test_evaluate_writes_a_report(datasets, tmp_path):
    ism, bsm = datasets
    out = tmp_path / "run"
    args = [
        "-d",
        str(ism),
        "-d",
        str(bsm),
        "-r",
        "ism",
        "-p",
        "by-file",
        "-m",
        "ngram-lr,metadata",
        "--folds",
        "3",
    ]
    result = _evaluate(*args, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "report written" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {(e["representation"], e["protocol"], e["model"]) for e in metrics["results"]} == {
        ("ism", "by-file", "ngram-lr"),
        ("ism", "by-file", "metadata"),
    }
    assert (out / "report.md").exists() and (out / "plots" / "ism-by-file-roc.png").exists()
    # The same run again has nothing to do; another run must not silently replace the first.
    same = _evaluate(*args, "-o", str(out))
    assert same.exit_code == 0 and "up to date" in same.output
    other = _evaluate(*args, "--seed", "3", "-o", str(out))
    assert other.exit_code == 2 and "--overwrite" in other.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "ngram-lr,gru"], "unknown model"),
        (["-p", "random"], "--protocol"),
        (["-r", "bsm"], "no BSM dataset"),
        (["--target-fpr", "2"], "--target-fpr"),
        (["--shared-min-share", "0"], "--shared-min-share"),
    ],
)
def test_bad_options_fail_in_one_line(datasets, tmp_path, args, message):
    result = _evaluate("-d", str(datasets[0]), "-o", str(tmp_path / "x"), *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_the_toolchain_ablation_takes_its_share_from_the_command_line(datasets, tmp_path):
    out = tmp_path / "run"
    args = ["-d", str(datasets[1]), "-p", "by-file", "-m", "ngram-lr-noshared", "--folds", "3"]
    result = _evaluate(*args, "--shared-min-share", "0.3", "-o", str(out))
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "metrics.json").read_text())["results"]
    assert [f["shared_code"]["min_share"] for f in entry["folds"]] == [0.3] * 3
    assert "### Toolchain ablation" in (out / "report.md").read_text()


def test_missing_dataset_fails_in_one_line(tmp_path):
    result = _evaluate("-d", str(tmp_path / "nope"), "-o", str(tmp_path / "x"))
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_an_unreadable_manifest_is_named_once_in_one_line(datasets, tmp_path):
    bad = tmp_path / "manifest.parquet"
    bad.write_text("not parquet")
    out = tmp_path / "x"
    result = _evaluate("-d", str(datasets[0]), "-m", "metadata", "--manifest", str(bad), "-o", str(out))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad}: not a readable Parquet manifest"), lines[0]


def test_manifest_metadata_reaches_the_audit_and_the_slices(datasets, tmp_path):
    from runtrace.corpus.manifest import write_manifest
    from runtrace.represent.dataset import SequenceDataset

    data = SequenceDataset.load(datasets[0])
    rows = [
        {"sha256": sha, "label": "malicious" if y else "benign", "origin_group": "g", "arch": "i386",
         "kind": "exe", "size": 4096 * (1 + int(y)), "compiler": "msvc" if i % 2 else "mingw-gcc"}
        for i, (sha, y) in enumerate(zip(data.sha256s(), data.labels(), strict=True))
    ]  # fmt: skip
    manifest = write_manifest(rows, tmp_path / "manifest.parquet")
    out = tmp_path / "run"
    result = _evaluate("-d", str(datasets[0]), "-p", "by-file", "-m", "metadata", "--folds", "3",
                       "--manifest", str(manifest), "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["datasets"][0]["manifest_sha256"]) == 64
    entry = metrics["results"][0]
    assert {s["value"] for s in entry["slices"] if s["dimension"] == "compiler"} == {"msvc", "mingw-gcc"}
    # Size separates the classes perfectly here: the audit must find the shortcut and the report say so.
    assert entry["per_file"]["metrics"]["roc_auc"]["value"] > 0.95
    assert "size" in (out / "report.md").read_text()


@pytest.mark.slow
def test_real_lstm_runs_inside_the_guard(datasets, tmp_path):
    # The guard raises if the LSTM reads a row outside its fold; a clean run proves it does not.
    result = _evaluate(
        "-d", str(datasets[1]), "-p", "by-origin", "-m", "lstm", "--folds", "3",
        "--lstm-epochs", "1", "--threads", "1", "-o", str(tmp_path / "lstm"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "lstm" / "metrics.json").read_text())
    assert metrics["results"][0]["per_file"]["counts"]["n"] == 30
    assert (tmp_path / "lstm" / "plots" / "bsm-by-origin-lstm-training.png").exists()


@pytest.mark.slow
def test_the_transformer_runs_on_bsm_and_is_skipped_on_ism(datasets, tmp_path):
    result = _evaluate(
        "-d", str(datasets[0]), "-d", str(datasets[1]), "-p", "by-origin", "-m", "transformer",
        "--folds", "3", "--lstm-epochs", "1", "--threads", "1", "-o", str(tmp_path / "t"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not run: ism by-origin transformer: transformer: none for representation 'ism'" in " ".join(
        result.output.split()
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    [entry] = metrics["results"]
    assert (entry["representation"], entry["model"]) == ("bsm", "transformer")
    assert entry["per_file"]["counts"]["n"] == 30


@pytest.mark.slow
def test_the_lstm_runs_without_shared_code_inside_the_guard(datasets, tmp_path):
    # The LSTM options reach the wrapped LSTM, which trains on filtered sequences inside the guard.
    result = _evaluate(
        "-d", str(datasets[1]), "-p", "by-file", "-m", "lstm-noshared", "--folds", "3",
        "--lstm-epochs", "1", "--threads", "1", "--shared-min-share", "0.2", "-o", str(tmp_path / "lstm"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "lstm" / "metrics.json").read_text())["results"]
    assert entry["per_file"]["counts"]["n"] == 30
    assert all(f["shared_code"]["removed_blocks"] > 0 for f in entry["folds"])


def test_evaluate_resumes_after_ctrl_c(datasets, tmp_path, monkeypatch):
    from runtrace.evaluate import runner as evaluation

    real_run_fold = evaluation.run_fold
    calls = []
    stop = [True]

    def stop_in_second_fold(*args, **kwargs):
        calls.append(1)
        if stop[0] and len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_fold(*args, **kwargs)

    out = tmp_path / "run"
    args = ["-d", str(datasets[0]), "-p", "by-file", "-m", "ngram-lr", "--folds", "3", "-o", str(out)]
    monkeypatch.setattr(evaluation, "run_fold", stop_in_second_fold)
    stopped = _evaluate(*args)
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted: 1 finished folds are saved" in stopped.output and "Traceback" not in stopped.output
    assert not (out / "report.md").exists()

    calls.clear()
    stop[0] = False
    resumed = _evaluate(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 1 folds done by an earlier run" in resumed.output
    assert len(calls) == 2  # only the two folds that had not finished
    assert (out / "report.md").exists()

    calls.clear()
    done = _evaluate(*args)
    assert done.exit_code == 0 and "up to date" in done.output and not calls

    calls.clear()
    again = _evaluate(*args, "--overwrite")
    assert again.exit_code == 0 and len(calls) == 3 and "resuming" not in again.output


def test_by_family_and_temporal_come_from_the_manifest(datasets, tmp_path):
    import datetime as dt

    from runtrace.corpus.manifest import write_manifest
    from runtrace.represent.dataset import SequenceDataset

    data = SequenceDataset.load(datasets[0])
    rows = [
        {"sha256": sha, "label": "malicious" if y else "benign", "origin_group": f"g{i}", "arch": "i386",
         "kind": "exe", "family": f"fam{i % 6}" if y else None,
         "first_seen": dt.date(2010 + i % 12, 1, 1)}
        for i, (sha, y) in enumerate(zip(data.sha256s(), data.labels(), strict=True))
    ]  # fmt: skip
    manifest = write_manifest(rows, tmp_path / "manifest.parquet")
    base = ["-d", str(datasets[0]), "-m", "metadata", "--folds", "3"]
    without = _evaluate(*base, "-p", "by-family", "-o", str(tmp_path / "none"))
    assert without.exit_code == 2 and "--manifest" in without.output and "Traceback" not in without.output
    out = tmp_path / "run"
    result = _evaluate(*base, "-p", "all", "--manifest", str(manifest), "--family-cap", "3", "-o", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {e["protocol"] for e in metrics["results"]} >= {"by-file", "by-origin", "by-family"}
    # 30 files cannot give each side of a temporal cut 20 of each class: said, not hidden.
    assert any("temporal" in s and "fewer than 20" in s for s in metrics["skipped_protocols"])
    assert "### By family" in (out / "report.md").read_text()
    bad = _evaluate(*base, "-p", "temporal", "--temporal-cut", "2020-13-01", "-o", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "--temporal-cut" in bad.output

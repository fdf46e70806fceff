"""The n-gram LightGBM as a shippable model (`runtrace train --kind ngram-lgbm`): it is the evaluation's
`ngram-lgbm`, its ONNX graph scores real traces as LightGBM does, scan and calibrate take it, a broken
directory is one line, its explanations are exact occlusions, and scanning it imports no LightGBM.

Real traces: the bundled demo traces (derived, no malware), split into training rows and held-out rows
(the five the demo scans among the held-out ones)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.models.ngram import ngram_keys, vocabulary_columns
from runtrace.models.ngram_checkpoint import save, train_and_save
from runtrace.models.ngram_export import export_ngram_onnx
from runtrace.models.spec import CONFIG, NGRAM_GRAPHS, NGRAM_WEIGHTS, VOCABULARY, read_spec
from runtrace.represent.dataset import SequenceDataset, build_dataset
from runtrace.scan.calibration import read_calibration
from runtrace.scan.kinds import explain, load_model, score
from runtrace.scan.ngramexplain import attribute_ngrams, score_ngrams
from runtrace.scan.ngrammodel import NgramModel
from runtrace.scan.onnxmodel import ModelError
from runtrace.scan.scanner import Scanner, ScanOptions
from runtrace.scan.sequence import encode_for_model
from runtrace.scan.synthetic import PLANTED_ADDRESS, synthetic_corpus, synthetic_trace
from runtrace.trace.formats.native import load_trace

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "runtrace" / "data" / "demo"
# Largest difference allowed between P(malicious) from the scanner (ONNX Runtime: float32 thresholds and
# leaf sums) and from LightGBM's predict_proba (float64) for the same file.
PARITY_TOLERANCE = 1e-5


def _demo_rows() -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of the demo manifest; the traces the demo scans are held out."""
    rows = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    scanned = {p.stem for p in (DEMO / "scan").glob("*.rtrace")}
    train = [r for k, r in enumerate(rows) if r["sha256"] not in scanned and k % 3 != 0]
    held = [r for k, r in enumerate(rows) if r["sha256"] in scanned or k % 3 == 0]
    return train, held


def _trace_path(row: dict) -> Path:
    return DEMO / "traces" / f"{row['sha256']}.rtrace"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """One dataset of every demo trace (training rows first), the evaluation's `NgramLightGBM` fitted on
    the training rows as `runtrace evaluate` fits it, and that model saved and exported for scanning."""
    from runtrace.models.ngram import NgramLightGBM

    train, held = _demo_rows()
    rows = train + held
    traces = [load_trace(_trace_path(r)) for r in rows]
    data = build_dataset(traces, [r["label"] for r in rows], representation="bsm")
    train_idx = np.arange(len(train))
    held_idx = np.arange(len(train), len(rows))
    clf = NgramLightGBM(seed=0).fit(data, train_idx)
    out = tmp_path_factory.mktemp("ngram") / "model"
    save(clf, data, train_idx, out, {"files": len(train)})
    export_ngram_onnx(out)
    return {"data": data, "clf": clf, "dir": out, "traces": traces, "train": train_idx, "held": held_idx}


def _model_copy(real, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(real["dir"], out)
    return out


def test_the_scanner_scores_real_traces_as_lightgbm_does(real) -> None:
    """The evaluation's path (dataset ids, `NgramFeaturizer`, LightGBM's predict_proba) against the scan
    path (the trace encoded again, tokens mapped by string, the exported graph in ONNX Runtime)."""
    model = NgramModel.load(real["dir"])
    held = real["held"]
    expected = real["clf"].predict_proba(real["data"], held)
    got = []
    for i in held:
        trace = real["traces"][i]
        seq = encode_for_model(trace, "bsm", model.normalisation, model.api, model.max_tokens, model.window)
        got.append(score_ngrams(model, seq).probability)
    got = np.asarray(got)
    assert len(held) >= 40 and expected.min() < 0.5 < expected.max()  # both classes, real scores
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
    # The training rows too (their tokens all known to the model).
    train = real["train"][:10]
    expected = real["clf"].predict_proba(real["data"], train)
    for i, p in zip(train, expected, strict=True):
        seq = encode_for_model(real["traces"][i], "bsm", model.normalisation, model.api, None, model.window)
        assert abs(score_ngrams(model, seq).probability - p) <= PARITY_TOLERANCE


def test_the_graph_reads_only_the_n_grams_the_trees_split_on(real) -> None:
    vocabulary = json.loads((real["dir"] / VOCABULARY).read_text())
    booster = real["clf"].model_.booster_
    split_on = np.flatnonzero(booster.feature_importance(importance_type="split"))
    assert vocabulary["columns"] == split_on.tolist()
    assert vocabulary["ngrams"] == real["clf"].featurizer_.vocabulary_[split_on].tolist()
    assert NgramModel.load(real["dir"]).n_features == len(split_on) < booster.num_feature()
    config = json.loads((real["dir"] / CONFIG).read_text())
    assert config["onnx"]["max_difference_from_lightgbm"] <= 1e-5
    assert config["onnx"]["inputs"] == len(split_on)


def test_train_fits_the_evaluations_model_and_writes_a_scannable_directory(tmp_path: Path) -> None:
    """`runtrace train --kind ngram-lgbm` on a dataset: the booster is the one the evaluation's
    `NgramLightGBM` fits on those files, the directory is complete, and `runtrace scan` runs it."""
    from runtrace.models.ngram import NgramLightGBM

    train, held = _demo_rows()
    data = build_dataset([_trace_path(r) for r in train], [r["label"] for r in train], representation="bsm")
    data.save(tmp_path / "dataset")
    model = tmp_path / "model"
    result = CliRunner().invoke(
        app, ["train", "--kind", "ngram-lgbm", "-r", "bsm", "--dataset", str(tmp_path / "dataset"),
              "-o", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ngram-lgbm: 300 trees on" in result.output and "tokens/s" in result.output
    assert "model.onnx" in result.output and "largest difference from LightGBM" in result.output

    evaluated = NgramLightGBM(seed=0).fit(SequenceDataset.load(tmp_path / "dataset"), np.arange(len(train)))
    assert (model / NGRAM_WEIGHTS).read_text() == evaluated.model_.booster_.model_to_string()
    config = json.loads((model / CONFIG).read_text())
    assert config["kind"] == "ngram-lgbm" and config["representation"] == "bsm"
    assert config["featurizer"]["orders"] == [1, 2, 3] and config["featurizer"]["max_features"] == 20_000
    assert config["featurizer"]["token_space"] == len(data.lexicon) + 1
    assert config["data"]["tracer_versions"] == sorted({load_trace(_trace_path(r)).meta.tracer_version
                                                        for r in train})  # fmt: skip
    assert config["data"]["min_instructions"] == min(
        load_trace(_trace_path(r)).instruction_count for r in train
    )
    graph = (model / NGRAM_GRAPHS["trees"]).read_bytes()
    assert config["onnx"]["graphs"]["trees"] == hashlib.sha256(graph).hexdigest()
    assert (
        config["onnx"]["weights_sha256"] == hashlib.sha256((model / NGRAM_WEIGHTS).read_bytes()).hexdigest()
    )

    scanned = CliRunner().invoke(app, ["scan", "--model", str(model), "--json", str(_trace_path(held[0]))])
    report = json.loads(scanned.stdout)
    (r,) = report["results"]
    assert r["status"] == "ok" and r["model"]["kind"] == "ngram-lgbm", r["reason"]
    assert r["model"]["weights_sha256"] == config["onnx"]["weights_sha256"]
    assert report["model"]["window"] == {"mode": "whole"} and report["model"]["aggregation"] == "none"
    assert r["trace"]["windows"] == 1 and r["trace"]["window_probabilities"] == [round(r["probability"], 4)]
    assert r["explanation"]["units_exact"] == r["explanation"]["units_total"] > 0
    # The same file through LightGBM itself, on the counts the scanner computed.
    import lightgbm

    loaded = load_model(model)
    seq = encode_for_model(load_trace(_trace_path(held[0])), "bsm", loaded.normalisation, loaded.api, None,
                           loaded.window)  # fmt: skip
    counts = score(loaded, seq).x
    full = np.zeros((1, config["featurizer"]["vocabulary"]), dtype=np.float32)
    full[0, json.loads((model / VOCABULARY).read_text())["columns"]] = counts
    booster = lightgbm.Booster(model_file=str(model / NGRAM_WEIGHTS))
    assert abs(booster.predict(full)[0] - r["probability"]) <= PARITY_TOLERANCE


def test_training_needs_both_classes(tmp_path: Path) -> None:
    traces, _ = synthetic_corpus(n=6)
    build_dataset(traces, [1] * 6, representation="bsm").save(tmp_path / "d")
    result = CliRunner().invoke(app, ["train", "--kind", "ngram-lgbm", "-d", str(tmp_path / "d"),
                                      "-o", str(tmp_path / "m")])  # fmt: skip
    assert result.exit_code == 2
    assert "needs training files of both classes" in result.output


# --- broken directories ------------------------------------------------------------------------------


def _refused(model: Path, match: str) -> str:
    with pytest.raises(ModelError, match=match) as info:
        load_model(model)
    message = str(info.value)
    assert "\n" not in message and str(model) in message
    return message


def test_a_missing_graph_is_a_one_line_error(real, tmp_path: Path) -> None:
    model = _model_copy(real, tmp_path)
    (model / NGRAM_GRAPHS["trees"]).unlink()
    assert "runtrace export" in _refused(model, r"model\.onnx missing")


def test_a_graph_that_does_not_match_its_recorded_sha256_is_refused(real, tmp_path: Path) -> None:
    model = _model_copy(real, tmp_path)
    path = model / NGRAM_GRAPHS["trees"]
    path.write_bytes(path.read_bytes() + b"\0")
    _refused(model, r"model\.onnx does not match the sha256 recorded in config\.json")


def test_other_broken_n_gram_directories(real, tmp_path: Path) -> None:
    model = _model_copy(real, tmp_path)
    vocabulary = json.loads((model / VOCABULARY).read_text())
    (model / VOCABULARY).write_text(json.dumps({**vocabulary, "ngrams": vocabulary["ngrams"][1:]}))
    _refused(model, r"exported with another vocabulary\.json")
    shutil.copy(real["dir"] / VOCABULARY, model / VOCABULARY)
    config = json.loads((model / CONFIG).read_text())
    (model / CONFIG).write_text(json.dumps({k: v for k, v in config.items() if k != "onnx"}))
    _refused(model, r"no ONNX graph recorded in config\.json; run `runtrace export")
    (model / CONFIG).write_text(json.dumps({**config, "featurizer": {**config["featurizer"], "orders": []}}))
    _refused(model, "cannot count")
    # A vocabulary whose length disagrees with the graph's input, recorded as if exported with it.
    short = json.dumps(
        {**vocabulary, "ngrams": vocabulary["ngrams"][1:], "columns": vocabulary["columns"][1:]}
    )
    (model / VOCABULARY).write_text(short)
    onnx = {**config["onnx"], "vocabulary_sha256": hashlib.sha256(short.encode()).hexdigest()}
    (model / CONFIG).write_text(json.dumps({**config, "onnx": onnx}))
    _refused(model, "inconsistent model files .*the graph reads")


def test_scan_reports_a_broken_n_gram_model_in_one_line_and_exits_2(real, tmp_path: Path) -> None:
    model = _model_copy(real, tmp_path)
    (model / NGRAM_GRAPHS["trees"]).unlink()
    result = CliRunner().invoke(app, ["scan", "--model", str(model), str(_trace_path(_demo_rows()[1][0]))])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.onnx missing" in lines[0]


def test_export_of_a_broken_n_gram_directory_is_one_line(real, tmp_path: Path) -> None:
    model = _model_copy(real, tmp_path)
    (model / NGRAM_WEIGHTS).unlink()
    result = CliRunner().invoke(app, ["export", str(model)])
    assert result.exit_code == 2 and "model.lgbm.txt missing" in result.output
    shutil.copy(real["dir"] / NGRAM_WEIGHTS, model / NGRAM_WEIGHTS)
    (model / NGRAM_GRAPHS["trees"]).unlink()
    result = CliRunner().invoke(app, ["export", str(model)])  # writes the graph again
    assert result.exit_code == 0, result.output
    assert (model / NGRAM_GRAPHS["trees"]).read_bytes() == (real["dir"] / NGRAM_GRAPHS["trees"]).read_bytes()


# --- explanations ----------------------------------------------------------------------------------


def _brute_force(model: NgramModel, ids: np.ndarray, masked: np.ndarray) -> float:
    """P(malicious) with the positions `masked` replaced by the unknown token, counted from scratch."""
    ids = ids.copy()
    ids[masked] = model.unknown
    columns = vocabulary_columns(model.ngrams, ngram_keys(ids, model.token_space, model.orders))
    x = np.bincount(columns[columns >= 0], minlength=model.n_features).astype(np.float32)
    return float(model.probabilities(x[None, :])[0])


@pytest.mark.parametrize("k", [0, 1, 3])
def test_every_contribution_is_an_exact_occlusion(real, k: int) -> None:
    model = NgramModel.load(real["dir"])
    trace = real["traces"][real["held"][k]]
    seq = encode_for_model(trace, "bsm", model.normalisation, model.api, None, model.window)
    scored = score_ngrams(model, seq)
    attribution = attribute_ngrams(model, trace, seq, scored)
    from runtrace.scan.explain import unit_map

    code = unit_map(trace, seq, np.arange(seq.length)[None, :]).codes[0]
    units = attribution.units
    assert len(units) == len(set(code.tolist())) and all(u.contribution is not None for u in units)
    contributions = [u.contribution for u in units]
    assert contributions == sorted(contributions, reverse=True)
    assert any(abs(c) > 1e-6 for c in contributions)
    checked = units[:6] + units[-3:] + [u for u in units if u.contribution == 0][:3]
    for u in checked:
        expected = scored.probability - _brute_force(model, scored.ids, code == u.code)
        assert u.contribution == pytest.approx(expected, abs=1e-9), u
        assert u.positions == int((code == u.code).sum())
    every = np.ones(seq.length, dtype=bool)
    assert attribution.reference_probability == pytest.approx(
        _brute_force(model, scored.ids, every), abs=1e-9
    )
    shown = [u.code for u in units[:5]]
    together = attribution.masked_probability(shown)
    assert together == pytest.approx(_brute_force(model, scored.ids, np.isin(code, shown)), abs=1e-9)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """An ngram-lgbm model trained on synthetic traces where only malicious ones run the planted block."""
    traces, labels = synthetic_corpus(n=60)
    data = build_dataset(traces, labels, representation="bsm")
    out = tmp_path_factory.mktemp("synthetic") / "model"
    train_and_save(data, out)
    export_ngram_onnx(out)
    return out


@pytest.mark.parametrize("seed", [601, 603, 605])
def test_occlusion_puts_the_planted_block_first(synthetic: Path, seed: int) -> None:
    model = NgramModel.load(synthetic)
    scanner = Scanner(model, read_calibration(synthetic), ScanOptions(min_instructions=1, explain=3))
    trace = synthetic_trace(True, seed)
    result = scanner.analyse_trace(trace, "t.exe", None, "trace")
    assert result.verdict == "malicious"
    top = result.explanation.towards_malicious[0]
    assert top.kind == "block" and int(top.address, 16) == PLANTED_ADDRESS
    assert top.contribution > 0.2 and top.occurrences == int((trace.visits == len(trace.blocks) - 1).sum())
    assert scanner.analyse_trace(synthetic_trace(False, seed + 1), "b.exe", None, "trace").verdict == "benign"


def test_an_ism_n_gram_model_scans_and_explains(tmp_path: Path) -> None:
    traces, labels = synthetic_corpus(n=40)
    data = build_dataset(traces, labels, representation="ism")
    train_and_save(data, tmp_path / "m")
    export_ngram_onnx(tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert isinstance(model, NgramModel) and model.representation == "ism"
    trace = synthetic_trace(True, 7)
    seq = encode_for_model(trace, "ism", model.normalisation, model.api, None, model.window)
    scored = score(model, seq)
    units = explain(model, trace, seq, scored, candidates=0).units
    assert scored.probability > 0.5 and trace.blocks[units[0].block_id].address == PLANTED_ADDRESS


# --- calibration, the scan path's imports ------------------------------------------------------------


def test_calibrate_takes_the_n_gram_models_out_of_fold_scores(real, tmp_path: Path) -> None:
    import pyarrow as pa

    from runtrace.evaluate.thresholds import threshold_for_fpr

    rng = np.random.default_rng(3)
    y = np.array([0] * 100 + [1] * 30)
    ngram = np.where(y == 1, rng.uniform(0.5, 1, len(y)), rng.uniform(0, 0.9, len(y)))
    n = len(y)
    rows = {"representation": ["bsm"] * 3 * n, "protocol": ["by-file"] * 3 * n,
            "model": ["lstm"] * n + ["ngram-lgbm"] * n + ["ngram-lgbm"] * n, "unit": ["file"] * 3 * n,
            "label": y.tolist() * 3,
            "score": [*rng.uniform(0, 1, n), *ngram, *rng.uniform(0, 1, n)]}  # fmt: skip
    rows["representation"][2 * n :] = ["ism"] * n  # another representation's n-gram scores
    report = tmp_path / "report"
    report.mkdir()
    pq.write_table(pa.table(rows), report / "predictions.parquet")
    model = _model_copy(real, tmp_path)
    result = CliRunner().invoke(app, ["calibrate", str(model), "--report", str(report),
                                      "--representation", "bsm", "--protocol", "by-file",
                                      "--target-fpr", "0.02", "--version", "v"])  # fmt: skip
    assert result.exit_code == 0, result.output
    calibration = read_calibration(model)
    assert calibration.threshold == calibration.probability_map(threshold_for_fpr(y, ngram, 0.02))
    assert "bsm ngram-lgbm scores" in calibration.source and calibration.model_version == "v"
    assert Scanner.load(model).decision.threshold == calibration.threshold
    # Without --representation: the model's own.
    result = CliRunner().invoke(app, ["calibrate", str(model), "--report", str(report), "--no-platt"])
    assert result.exit_code == 0 and read_calibration(model).threshold == threshold_for_fpr(y, ngram, 0.01)


def test_the_scan_path_never_imports_lightgbm(real, tmp_path: Path) -> None:
    """A fresh interpreter loads the n-gram model through the scanner's seam and scans a trace file with
    explanations: LightGBM, scikit-learn, scipy, pyarrow, torch and onnx(mltools) are never imported."""
    trace = _trace_path(_demo_rows()[1][0])
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import runtrace.cli\n"
        "from runtrace.scan.inputs import iter_inputs\n"
        "from runtrace.scan.scanner import Scanner, ScanOptions\n"
        f"scanner = Scanner.load(Path({str(real['dir'])!r}), ScanOptions(workers=1))\n"
        f"results = scanner.scan(list(iter_inputs([Path({str(trace)!r})])))\n"
        "assert [r.status for r in results] == ['ok'], [r.reason for r in results]\n"
        "assert results[0].explanation.towards_malicious or results[0].explanation.towards_benign\n"
        "heavy = {'lightgbm', 'sklearn', 'scipy', 'pyarrow', 'torch', 'onnxmltools', 'onnx', 'skl2onnx'}\n"
        "loaded = heavy & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_spec_reader_tells_the_kinds_apart(real) -> None:
    from runtrace.models.spec import CheckpointSpec, NgramSpec, model_files
    from scan_support import tiny_model_dir

    ngram, lstm = read_spec(real["dir"]), read_spec(tiny_model_dir())
    assert isinstance(ngram, NgramSpec) and isinstance(lstm, CheckpointSpec)
    assert model_files(ngram) == [CONFIG, VOCABULARY, NGRAM_WEIGHTS, NGRAM_GRAPHS["trees"]]
    with pytest.raises(ModelError, match="not a sequence model"):
        from runtrace.scan.onnxmodel import OnnxModel

        OnnxModel.load(real["dir"])


def test_the_service_scans_with_an_n_gram_model(real, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from runtrace.serve.app import create_app
    from runtrace.serve.jobs import ScanService, ScanSettings
    from runtrace.serve.store import JobStore, SampleStore
    from serve_support import wait_for

    state = tmp_path / "state"
    service = ScanService(
        ScanSettings(model_dir=real["dir"]), JobStore(state / "scans.db"), SampleStore(state / "samples")
    )
    trace = _trace_path(_demo_rows()[1][0])
    with TestClient(create_app(service)) as client:
        body = client.post("/api/v1/scans", files={"file": (trace.name, trace.read_bytes())}).json()
        scan = wait_for(client, body["id"])
    assert scan["status"] == "done", scan
    result = scan["result"]
    assert result["model"]["kind"] == "ngram-lgbm" and result["explanation"]["units_exact"] > 0
    model = NgramModel.load(real["dir"])
    seq = encode_for_model(load_trace(trace), "bsm", model.normalisation, model.api, None, model.window)
    assert result["probability"] == score_ngrams(model, seq).probability


def test_the_share_of_the_score_is_weighed_on_logits(synthetic: Path) -> None:
    """Boosted trees saturate (the rev-17 corpus model's 1 % FPR threshold was 0.9988), so an n-gram
    model's explanation weighs the shown rows' share on the logit scale, and says so when weak."""
    from runtrace.scan.explain import logit

    model = NgramModel.load(synthetic)
    scanner = Scanner(model, read_calibration(synthetic), ScanOptions(min_instructions=1, explain=2))
    for seed in (611, 612):
        result = scanner.analyse_trace(synthetic_trace(bool(seed % 2), seed), "t", None, "trace")
        e, p = result.explanation, result.probability
        at, ref, without = logit(p), logit(e.reference_probability), logit(e.without_shown)
        assert abs(at - ref) >= 0.1
        assert e.shown_share == pytest.approx((at - without) / (at - ref), abs=2e-3)
        rows = e.towards_malicious + e.towards_benign
        assert all(r.estimate == pytest.approx(logit(p) - logit(p - r.contribution), abs=1e-6) for r in rows)
        assert e.note is None or "logit" in e.note


def test_the_bundled_default_scores_real_traces_as_its_lightgbm_model_does() -> None:
    """The bundled default (an n-gram model since 2026-12-06): its graph, run by the scanner, against
    LightGBM's own text model shipped beside it, on the demo's real traces; same verdicts at its
    calibrated threshold, whose raw score lies where the scores crowd (0.999975; mapped by its Platt
    scaling to what a scan reports)."""
    import json

    import lightgbm

    from runtrace.models.names import NGRAM_KINDS
    from runtrace.paths import default_model_dir

    root = default_model_dir()
    if json.loads((root / "config.json").read_text())["kind"] not in NGRAM_KINDS:
        pytest.skip("the bundled default is not an n-gram model; test_onnx_parity covers the others")
    model = NgramModel.load(root)
    booster = lightgbm.Booster(model_file=str(root / "model.lgbm.txt"))
    columns = np.asarray(json.loads((root / "vocabulary.json").read_text())["columns"])
    calibration = read_calibration(root)
    paths = sorted((DEMO / "scan").glob("*.rtrace")) + sorted((DEMO / "traces").glob("*.rtrace"))[:30]
    got, expected = [], []
    for path in paths:
        trace = load_trace(path)
        seq = encode_for_model(trace, "bsm", model.normalisation, model.api, model.max_tokens, model.window)
        scored = score_ngrams(model, seq)
        full = np.zeros((1, booster.num_feature()), dtype=np.float64)
        full[0, columns] = scored.x
        got.append(scored.probability)
        expected.append(float(booster.predict(full)[0]))
    got, expected = np.asarray(got), np.asarray(expected)
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
    mapped = calibration.probability_map or (lambda p: p)
    threshold = calibration.threshold
    assert list(mapped(got) >= threshold) == list(mapped(expected) >= threshold)


def _strata_manifest(path: Path, shas: list[str], labels: list[int], strata: list[str]) -> Path:
    rows = [
        {"sha256": s, "label": "malicious" if y else "benign", "origin_group": f"g/{s}", "arch": "i386",
         "kind": k, "compiler": "msvc", "linker_major": 9, "linker_minor": 0}
        for s, y, k in zip(shas, labels, strata, strict=True)
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_train_weighs_files_by_match_stratum_and_leaves_one_class_strata_out(tmp_path: Path) -> None:
    """`--weigh-strata MANIFEST`: the booster is the evaluation's model fitted with the strata's weights on
    the files of strata that hold both classes; the config says so."""
    from runtrace.corpus.matching import stratum_weights
    from runtrace.models.ngram import NgramLightGBM

    train, _ = _demo_rows()
    data = build_dataset([_trace_path(r) for r in train], [r["label"] for r in train], representation="bsm")
    data.save(tmp_path / "dataset")
    labels = [int(y) for y in data.labels()]
    first_malicious = labels.index(1)
    # every file an EXE but the first malicious one, alone in its stratum (a DLL)
    kinds = ["dll" if i == first_malicious else "exe" for i in range(len(labels))]
    manifest = _strata_manifest(tmp_path / "manifest.parquet", data.sha256s(), labels, kinds)
    model = tmp_path / "model"
    args = ["train", "--kind", "ngram-lgbm", "--dataset", str(tmp_path / "dataset"), "-o", str(model)]
    result = CliRunner().invoke(app, [*args, "--weigh-strata", str(manifest)])
    assert result.exit_code == 0, result.output
    assert f"1 of {len(labels)} files are in strata of one class and left out" in result.output

    weights = stratum_weights([("i386", k, "msvc", "9") for k in kinds], np.array(labels))
    kept = np.flatnonzero(weights > 0)
    assert first_malicious not in kept and len(kept) == len(labels) - 1
    expected = NgramLightGBM(seed=0).fit(SequenceDataset.load(tmp_path / "dataset"), kept, weights[kept])
    assert (model / NGRAM_WEIGHTS).read_text() == expected.model_.booster_.model_to_string()
    config = json.loads((model / CONFIG).read_text())
    assert config["training"]["files"] == len(labels) - 1
    assert config["training"]["weighting"]["files_left_out"] == 1
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert config["training"]["weighting"]["by"].endswith(f"manifest with sha256 {digest}")
    assert "class_weight" not in config["lightgbm"]  # the weights balance the classes by mass


def test_weigh_strata_refuses_a_manifest_without_the_datasets_files_and_other_kinds(tmp_path: Path) -> None:
    train, _ = _demo_rows()
    data = build_dataset([_trace_path(r) for r in train], [r["label"] for r in train], representation="bsm")
    data.save(tmp_path / "dataset")
    labels = [int(y) for y in data.labels()]
    manifest = _strata_manifest(
        tmp_path / "m.parquet", data.sha256s()[1:], labels[1:], ["exe"] * (len(labels) - 1)
    )
    args = ["train", "--dataset", str(tmp_path / "dataset"), "-o", str(tmp_path / "model"), "--weigh-strata"]
    result = CliRunner().invoke(app, [*args, str(manifest), "--kind", "ngram-lgbm"])
    assert result.exit_code != 0 and "1 of the dataset's" in result.output and "not in it" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, [*args, str(tmp_path / "none.parquet"), "--kind", "ngram-lgbm"])
    assert result.exit_code != 0 and "none.parquet" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, [*args, str(manifest), "--kind", "bsm-lstm"])
    assert result.exit_code != 0 and "take file weights, not bsm-lstm" in result.output
    # Every file in a stratum of one class: nothing is left to train on, and the error says why.
    one_class = ["exe" if y else "dll" for y in labels]
    alone = _strata_manifest(tmp_path / "alone.parquet", data.sha256s(), labels, one_class)
    result = CliRunner().invoke(app, [*args, str(alone), "--kind", "ngram-lgbm"])
    assert (
        result.exit_code != 0 and f"(weighted: 0 of {len(labels)} files weigh more than 0)" in result.output
    )

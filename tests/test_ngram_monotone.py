"""`ngram-lgbm-monotone`: n-gram trees whose every count can only raise the score.

What the constraint promises, checked on real demo traces: more of any n-gram never lowers the score,
so a trace cut short never scores above the whole trace (and code appended never lowers it); and the
kind trains, exports, scans and calibrates like `ngram-lgbm`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.evaluate.registry import resolve_models
from runtrace.models.ngram import NgramLightGBM, NgramLightGBMMonotone
from runtrace.models.spec import CONFIG
from runtrace.represent.dataset import SequenceDataset, build_dataset
from runtrace.scan.calibration import read_calibration
from runtrace.trace.formats.native import load_trace

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "runtrace" / "data" / "demo"


class _Prefixes:
    """Each of `data`'s sequences and, after them, the first `keep` of its tokens (the same lexicon)."""

    def __init__(self, data, keep: float) -> None:
        self.data, self.keep = data, keep
        self.lexicon = data.lexicon
        self.representation = data.representation

    def __len__(self) -> int:
        return 2 * len(self.data)

    def labels(self):
        return np.concatenate([self.data.labels(), self.data.labels()])

    def sequence(self, i: int) -> np.ndarray:
        n = len(self.data)
        seq = self.data.sequence(i % n)
        return seq if i < n else seq[: int(len(seq) * self.keep)]


@pytest.fixture(scope="module")
def demo():
    rows = pq.read_table(DEMO / "manifest.parquet").to_pylist()
    traces = [load_trace(DEMO / "traces" / f"{r['sha256']}.rtrace") for r in rows]
    data = build_dataset(traces, [r["label"] for r in rows], representation="bsm")
    train = np.arange(len(rows))[np.arange(len(rows)) % 3 != 0]
    held = np.arange(len(rows))[np.arange(len(rows)) % 3 == 0]
    return data, train, held


def _raised(clf, x, rng) -> tuple[np.ndarray, np.ndarray]:
    """Scores of `x` and of `x` with random counts added to random columns of every row."""
    dense = x.toarray()
    more = dense + rng.integers(0, 4, dense.shape) * (rng.random(dense.shape) < 0.05)
    return clf.model_.predict_proba(dense)[:, 1], clf.model_.predict_proba(more)[:, 1]


def test_more_of_any_n_gram_never_lowers_the_score(demo) -> None:
    data, train, held = demo
    rng = np.random.default_rng(0)
    mono = NgramLightGBMMonotone(seed=0).fit(data, train)
    x = mono.featurizer_.transform(data, held)
    before, after = _raised(mono, x, rng)
    assert before.min() < 0.5 < before.max()  # real scores of both classes
    assert np.all(after >= before - 1e-12)
    # The unconstrained trees on the same files do not promise it: some added count lowers their score.
    free = NgramLightGBM(seed=0).fit(data, train)
    before, after = _raised(free, free.featurizer_.transform(data, held), np.random.default_rng(0))
    assert np.any(after < before - 1e-6)


def test_a_trace_cut_short_never_scores_above_the_whole_trace(demo) -> None:
    """A prefix holds no n-gram more often than the whole sequence does, so the constrained score of
    every file's first half is at most its whole score: deleting code cannot make a file look worse,
    and padding malware with code cannot make it look better."""
    data, train, held = demo
    both = _Prefixes(data, keep=0.5)
    mono = NgramLightGBMMonotone(seed=0).fit(both, train)
    whole = mono.predict_proba(both, held)
    cut = mono.predict_proba(both, held + len(data))
    assert np.all(cut <= whole + 1e-12)
    assert np.any(cut < whole - 1e-6)  # the cut files did lose evidence


def test_train_writes_a_monotone_model_that_scans_and_calibrates(demo, tmp_path: Path) -> None:
    data, train, held = demo
    data.save(tmp_path / "dataset")
    model = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--kind", "ngram-lgbm-monotone", "--dataset",
                                      str(tmp_path / "dataset"), "-o", str(model)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ngram-lgbm-monotone: 300 trees on" in result.output
    config = json.loads((model / CONFIG).read_text())
    assert config["kind"] == "ngram-lgbm-monotone" and config["lightgbm"]["monotone"] is True
    assert "monotone_constraints" not in config["lightgbm"]  # not one +1 per n-gram in config.json
    saved = SequenceDataset.load(tmp_path / "dataset")
    evaluated = NgramLightGBMMonotone(seed=0).fit(saved, np.arange(len(saved)))
    assert (model / "model.lgbm.txt").read_text() == evaluated.model_.booster_.model_to_string()

    trace = next((DEMO / "scan").glob("*.rtrace"))
    scanned = CliRunner().invoke(app, ["scan", "--model", str(model), "--json", str(trace)])
    (r,) = json.loads(scanned.stdout)["results"]
    assert r["status"] == "ok" and r["model"]["kind"] == "ngram-lgbm-monotone", r["reason"]

    # calibrate reads the evaluation's scores of the model of the same name, not ngram-lgbm's.
    y = np.array([0] * 50 + [1] * 50)
    n = len(y)
    scores = np.linspace(0, 1, n)
    report = tmp_path / "report"
    report.mkdir()
    table = {"representation": ["bsm"] * 2 * n, "protocol": ["by-file"] * 2 * n,
             "model": ["ngram-lgbm"] * n + ["ngram-lgbm-monotone"] * n, "unit": ["file"] * 2 * n,
             "label": y.tolist() * 2, "score": [*scores[::-1], *scores]}  # fmt: skip
    pq.write_table(pa.table(table), report / "predictions.parquet")
    result = CliRunner().invoke(app, ["calibrate", str(model), "--report", str(report), "--no-platt"])
    assert result.exit_code == 0, result.output
    calibration = read_calibration(model)
    assert "ngram-lgbm-monotone" in calibration.source and calibration.threshold == pytest.approx(scores[49])


def test_evaluate_offers_the_monotone_model() -> None:
    (spec,) = resolve_models(["ngram-lgbm-monotone"])
    assert "raise the score" in spec.description

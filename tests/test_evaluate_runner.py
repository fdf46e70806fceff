import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from evaluate_fakes import SpyEstimator, make_dataset
from runtrace.evaluate import protocols as P
from runtrace.evaluate.guard import LeakError
from runtrace.evaluate.registry import HOLDOUT, INNER_CV, ModelSpec, resolve_models
from runtrace.evaluate.result_document import EvaluationResults
from runtrace.evaluate.runner import RunConfig, run_evaluation, run_fold
from runtrace.evaluate.write_report import write_report


def _spy_spec(strategy=INNER_CV, **kwargs) -> ModelSpec:
    return ModelSpec("spy", "records its calls", strategy, lambda ctx: SpyEstimator(**kwargs))


@pytest.fixture(autouse=True)
def _reset_spy():
    SpyEstimator.calls = []


@pytest.mark.parametrize("strategy", [INNER_CV, HOLDOUT])
@pytest.mark.parametrize("protocol", [P.BY_FILE, P.BY_ORIGIN])
def test_models_are_fitted_on_training_folds_only(protocol, strategy):
    data = make_dataset(n_files=60, n_groups=12)
    config = RunConfig(folds=5, seed=4)
    result = run_evaluation([("fake", data)], [_spy_spec(strategy)], [protocol], config, show_progress=False)
    plan = (P.by_file if protocol == P.BY_FILE else P.by_origin)(data, 5, 4)
    groups = P.origin_groups(data)
    # Calls come fold by fold, each fold ending with the scoring of its test rows.
    calls = iter(SpyEstimator.calls)
    for fold in plan.folds:
        fits = []
        for kind, rows in calls:
            if kind == "predict" and np.array_equal(rows, fold.test):
                break
            if kind == "fit":
                fits.append(rows)
        assert fits, "every fold fits at least one model"
        for rows in fits:
            assert not set(rows) & set(fold.test)
            assert set(rows) <= set(fold.train)
            if protocol == P.BY_ORIGIN:
                assert not set(groups[rows]) & set(groups[fold.test])
    run = result.runs[0]
    assert np.all(run.predictions["spy"].fold >= 0)  # every file scored out of fold


def test_a_model_reading_test_rows_while_fitting_is_stopped():
    data = make_dataset(n_files=30, n_groups=6)
    with pytest.raises(LeakError):
        run_evaluation(
            [("fake", data)], [_spy_spec(touch_all=True)], [P.BY_FILE], RunConfig(), show_progress=False
        )


@pytest.mark.parametrize("strategy", [INNER_CV, HOLDOUT])
def test_threshold_ignores_test_fold_scores(strategy):
    # Training: benign files score <= 0.3, malicious >= 0.8.  Test: benign files score 0.99.  A threshold
    # that had seen the test fold would have to sit above 0.99 to keep FPR at 1 %.
    data = make_dataset(n_files=60, n_groups=12)
    y = data.labels()
    train, test = np.arange(0, 50), np.arange(50, 60)
    scores = np.where(y == 1, 0.85, 0.0)
    scores[train[y[train] == 0]] = np.linspace(0.0, 0.3, int(np.sum(y[train] == 0)))
    scores[test[y[test] == 0]] = 0.99
    spec = _spy_spec(strategy, fixed_scores=scores)
    fold = P.Fold(0, train, test)
    config = RunConfig(target_fpr=0.01)
    test_scores, record = run_fold(spec, None, data, P.BY_FILE, fold, config)
    assert record.threshold < 0.31
    assert record.threshold_source.startswith(strategy)
    if strategy == INNER_CV:
        assert record.threshold == np.nextafter(0.3, np.inf)  # just above the top training benign score
    # Measured honestly, the test fold's benign files are all false positives.
    assert np.all(test_scores[y[test] == 0] >= record.threshold)


def test_report_files_are_written(tmp_path):
    class Logged(SpyEstimator):
        def fit(self, data, train_idx):
            self.history_ = [
                {"epoch": 1, "loss": 0.7, "val_auc": 0.6},
                {"epoch": 2, "loss": 0.4, "val_auc": 0.8},
            ]
            return super().fit(data, train_idx)

    ism = make_dataset(n_files=40, n_groups=10, signal=0.4)
    bsm = make_dataset(n_files=40, n_groups=10, signal=0.4, representation="bsm", seed=1)
    models = [
        *resolve_models(["ngram-lr", "metadata"]),
        ModelSpec("lstm", "logged", HOLDOUT, lambda ctx: Logged()),
    ]
    config = RunConfig(folds=4, window={"mode": "sampled", "length": 64, "count": 3})
    protocols = [P.LEAKY, P.BY_FILE]  # by-origin is covered above; plots are the slow part here
    result = run_evaluation([("a", ism), ("b", bsm)], models, protocols, config, show_progress=False)
    results, paths = write_report(result, tmp_path / "run1", command="runtrace evaluate ...", n_resamples=30)
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    metrics = json.loads(paths["metrics"].read_text())
    assert EvaluationResults.read(paths["metrics"]) == results  # what the report showed is what was written
    assert len(metrics["results"]) == 2 * 2 * 3
    leaky = next(e for e in metrics["results"] if e["protocol"] == "leaky")
    assert "per_window" in leaky and leaky["per_file"]["counts"]["n"] == 40
    by_file = next(e for e in metrics["results"] if e["protocol"] == "by-file" and e["model"] == "ngram-lr")
    assert {s["dimension"] for s in by_file["slices"]} >= {"arch", "kind"}
    report = paths["report"].read_text()
    for heading in (
        "Per-file results",
        "Against the paper",
        "Leaky split inflation",
        "Shortcut audit",
        "Folds",
    ):
        assert heading in report
    pngs = {p.name for p in (tmp_path / "run1" / "plots").glob("*.png")}
    assert {"ism-by-file-roc.png", "ism-by-file-lstm-training.png", "bsm-leaky-confusion.png"} <= pngs
    assert "ism-by-file-scores.png" in pngs
    table = pq.read_table(paths["predictions"])
    assert set(table.column("protocol").to_pylist()) == set(protocols)


def test_a_failing_model_is_reported_and_the_others_still_run():
    class Broken(SpyEstimator):
        def fit(self, data, train_idx):
            raise ValueError("no training windows")

    data = make_dataset(n_files=30, n_groups=6)
    models = [ModelSpec("broken", "fails", INNER_CV, lambda ctx: Broken()), _spy_spec()]
    result = run_evaluation([("fake", data)], models, [P.BY_FILE], RunConfig(), show_progress=False)
    run = result.runs[0]
    assert run.skipped["broken"].startswith("failed in fold 1: ValueError: no training windows")
    assert set(run.predictions) == {"spy"}


def test_an_interrupted_evaluation_resumes_from_its_saved_folds(tmp_path):
    data = make_dataset(n_files=60, n_groups=12)
    config = RunConfig(folds=5, seed=4)
    saved = tmp_path / "checkpoints"

    class StopsInSecondFold(SpyEstimator):
        def fit(self, data, train_idx):
            if sum(kind == "fit" for kind, _ in SpyEstimator.calls) == 1:
                raise KeyboardInterrupt  # Ctrl-C while the second fold is being fitted
            return super().fit(data, train_idx)

    stopping = ModelSpec("spy", "stops", HOLDOUT, lambda ctx: StopsInSecondFold())
    with pytest.raises(KeyboardInterrupt):
        run_evaluation([("fake", data)], [stopping], [P.BY_FILE], config, False, checkpoint_dir=saved)
    first_fold_test = P.by_file(data, 5, 4).folds[0].test

    SpyEstimator.calls = []
    resumed = run_evaluation(
        [("fake", data)], [_spy_spec(HOLDOUT)], [P.BY_FILE], config, False, checkpoint_dir=saved
    )
    # The first fold was read back, not fitted or scored again; the other four were computed.
    assert sum(kind == "fit" for kind, _ in SpyEstimator.calls) == 4
    assert not any(np.array_equal(rows, first_fold_test) for kind, rows in SpyEstimator.calls)

    fresh = run_evaluation([("fake", data)], [_spy_spec(HOLDOUT)], [P.BY_FILE], config, False)
    got, want = resumed.runs[0].predictions["spy"], fresh.runs[0].predictions["spy"]
    assert np.array_equal(got.score, want.score) and np.array_equal(got.threshold, want.threshold)
    assert [f.threshold_source for f in got.folds] == [f.threshold_source for f in want.folds]


def test_saved_folds_are_not_reused_under_other_settings(tmp_path):
    data = make_dataset(n_files=60, n_groups=12)
    saved = tmp_path / "checkpoints"
    spec = _spy_spec(HOLDOUT)
    run_evaluation(
        [("fake", data)], [spec], [P.BY_FILE], RunConfig(folds=5, seed=4), False, checkpoint_dir=saved
    )
    SpyEstimator.calls = []
    other = RunConfig(folds=5, seed=4, target_fpr=0.2)
    run_evaluation([("fake", data)], [spec], [P.BY_FILE], other, False, checkpoint_dir=saved)
    assert sum(kind == "fit" for kind, _ in SpyEstimator.calls) == 5


def test_a_session_is_up_to_date_once_written_and_refuses_another_runs_report(tmp_path):
    from runtrace.evaluate.session import EvaluationSession, SessionError

    data = make_dataset(n_files=60, n_groups=12)
    spec = _spy_spec(HOLDOUT)

    def session(**settings) -> EvaluationSession:
        config = RunConfig(folds=5, seed=4, **settings)
        return EvaluationSession(tmp_path, [("fake", data)], [spec], [P.BY_FILE], config, bootstrap=20)

    first = session()
    assert not first.up_to_date() and first.start() == 0
    first.write(first.run(show_progress=False), "runtrace evaluate ...")
    assert first.report.exists() and session().up_to_date()
    assert first.saved_folds() == 5

    other = session(target_fpr=0.2)
    assert not other.up_to_date()
    with pytest.raises(SessionError, match="--overwrite"):
        other.start()
    assert other.start(overwrite=True) == 0  # the other run's saved folds are forgotten
    assert not other.checkpoint_dir.exists()

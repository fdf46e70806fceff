"""The by-family and temporal protocols on small fakes: families never straddle, the family cap holds,
nothing first seen after the cut is trained on, and the report says where the cut fell."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluate_fakes import FakeSequenceDataset, SpyEstimator, make_dataset
from runtrace.evaluate import lineage
from runtrace.evaluate import protocols as P
from runtrace.evaluate.registry import INNER_CV, ModelSpec, resolve_models
from runtrace.evaluate.runner import RunConfig, per_file, run_evaluation
from runtrace.evaluate.write_report import write_report


def with_lineage(n_files: int = 120, big: int = 50, seed: int = 0, dated: bool = True) -> FakeSequenceDataset:
    """Malware in families (one of `big` files, like APT1, the rest small), benign in origin groups;
    malware first seen 2008-2021, benign 2016-2024, so the classes overlap in time only in part."""
    data = make_dataset(n_files=n_files, n_groups=n_files // 4, seed=seed)
    y = data.labels()
    mal = np.flatnonzero(y == 1)
    family = [None] * n_files
    for k, i in enumerate(mal):
        family[i] = "APT1" if k < big else f"fam{k % 9}"
    rng = np.random.default_rng(seed)
    dates = []
    for i in range(n_files):
        year = int(rng.integers(2008, 2022)) if y[i] == 1 else int(rng.integers(2016, 2025))
        dates.append(dt.date(year, int(rng.integers(1, 13)), 1) if dated else None)
    files = data.files.append_column("family", pa.array(family, pa.string()))
    files = files.append_column("first_seen", pa.array(dates, pa.date32()))
    # Dated as the corpus dates its sources: malware by its collection's csv, benign files by their PyPI
    # upload, and the benign files of 2023 and later by a Debian changelog (a source only recent files have).
    rules = [
        None
        if d is None
        else "csv-date"
        if label == 1
        else "debian-changelog"
        if d.year >= 2023
        else "pypi-upload"
        for d, label in zip(dates, y, strict=True)
    ]
    files = files.append_column("first_seen_source", pa.array(rules, pa.string()))
    return FakeSequenceDataset("ism", files, [data.sequence(i) for i in range(n_files)], data.lexicon)


def test_by_family_keeps_families_whole_and_caps_the_largest():
    data = with_lineage()
    plan = P.by_family(data, k=5, seed=0, family_cap=10)
    P.check_plan(plan, data)
    fam = lineage.families(data)
    groups = P.protocol_groups(P.BY_FAMILY, data)
    tested = np.concatenate([f.test for f in plan.folds])
    assert sorted(tested.tolist()) == plan.rows.tolist()  # every evaluated file tested once
    assert np.sum(fam[plan.rows] == "apt1") == 10 and np.sum(fam == "apt1") == 50
    for fold in plan.folds:
        assert not set(groups[fold.train]) & set(groups[fold.test])
        assert set(fold.train) <= set(plan.rows.tolist())
    # Files over the cap are neither trained on nor tested.
    out = set(range(len(fam))) - set(plan.rows.tolist())
    assert len(out) == 40 and all(fam[i] == "apt1" for i in out)
    assert plan.info["capped"] == {"apt1": [50, 10]} and any("apt1 10 of 50" in n for n in plan.notes)
    # One label in two collections' spelling is one group.
    assert groups[np.flatnonzero(fam == "apt1")[0]] == "family:apt1"


def test_the_family_cap_draw_is_seeded_and_independent_of_row_order():
    data = with_lineage()
    a = set(P.sha256_column(data)[P.by_family(data, k=5, seed=1, family_cap=10).rows])
    perm = np.random.default_rng(2).permutation(len(data.labels()))
    shuffled = FakeSequenceDataset(
        "bsm", data.files.take(perm), [data.sequence(i) for i in perm], data.lexicon
    )
    b = set(P.sha256_column(shuffled)[P.by_family(shuffled, k=5, seed=1, family_cap=10).rows])
    assert a == b


def test_by_family_needs_families():
    with pytest.raises(P.ProtocolError, match="no file has a family"):
        P.by_family(make_dataset(n_files=40, n_groups=10), k=5)


def test_inner_splits_under_by_family_keep_families_apart():
    data = with_lineage()
    plan = P.by_family(data, k=5, seed=0, family_cap=10)
    groups = P.protocol_groups(P.BY_FAMILY, data)
    for fit_rows, val in P.inner_splits(P.BY_FAMILY, data, plan.folds[0].train, 3, seed=1):
        assert not set(groups[fit_rows]) & set(groups[val])


def test_temporal_trains_only_on_the_past():
    data = with_lineage()
    plan = P.temporal(data, min_per_side=5)
    P.check_plan(plan, data)
    [fold] = plan.folds
    dates = lineage.first_seen(data)
    cut = dt.date.fromisoformat(plan.info["cut"])
    assert all(dates[i] < cut for i in fold.train) and all(dates[i] >= cut for i in fold.test)
    y = data.labels()
    for rows in (fold.train, fold.test):
        assert {0, 1} <= set(y[rows].tolist())
    # The report's table adds up to the files on each side.
    table = plan.info["by_year"]
    assert sum(r["files"] for r in table if r["side"] == "train") == len(fold.train)
    assert sum(r["files"] for r in table if r["side"] == "test" and r["label"] == "malicious") == int(
        np.sum(y[fold.test] == 1)
    )
    # ... and so does the table by dating rule, whose Debian-dated benign files are all on the test side.
    rules = plan.info["by_dating_rule"]
    assert sum(r["files"] for r in rules if r["side"] == "test") == len(fold.test)
    debian = [r for r in rules if r["dated_by"] == "debian-changelog"]
    assert debian and all(r["side"] == "test" and r["label"] == "benign" for r in debian)
    assert lineage.unseen_before_cut(rules) == debian
    assert any("only on the test side" in n and "benign dated by debian-changelog" in n for n in plan.notes)


def test_the_chosen_cut_balances_both_classes():
    dates = [dt.date(2010 + i, 6, 1) for i in range(10)] + [dt.date(2015 + i, 6, 1) for i in range(10)]
    labels = np.asarray([1] * 10 + [0] * 10)
    cut, share = lineage.choose_cut(dates, labels)
    # Malware 2010-2019, benign 2015-2024 (one file a year each): no cut leaves more than 2 of either
    # class on its smaller side; of the cuts that leave 2, the latest (more training data) is taken.
    assert share == pytest.approx(0.2) and cut == dt.date(2018, 6, 1)
    # A cut must leave enough of each class on each side when one can: here 3 of each.
    many = dates + [dt.date(2014, 1, 1)] * 3
    cut, _ = lineage.choose_cut(many, np.concatenate([labels, [0, 0, 0]]), min_per_side=3)
    assert cut <= dt.date(2017, 6, 1)


def test_temporal_with_a_given_cut_and_its_limits():
    data = with_lineage()
    plan = P.temporal(data, cut=dt.date(2018, 1, 1), min_per_side=3)
    assert plan.info["cut"] == "2018-01-01" and "given" in plan.info["rule"]
    with pytest.raises(P.ProtocolError, match="fewer than 3 files for train benign"):
        P.temporal(data, cut=dt.date(2010, 1, 1), min_per_side=3)
    with pytest.raises(P.ProtocolError, match="first-seen dates"):
        P.temporal(with_lineage(dated=False))


def test_undated_files_sit_out_of_the_temporal_split():
    data = with_lineage()
    dates = lineage.first_seen(data)
    dates[0] = dates[1] = None
    files = data.files.set_column(data.files.column_names.index("first_seen"), "first_seen", pa.array(dates))
    undated = FakeSequenceDataset("ism", files, [data.sequence(i) for i in range(len(dates))], data.lexicon)
    plan = P.temporal(undated, min_per_side=5)
    assert 0 not in plan.rows and 1 not in plan.rows
    assert sum(plan.info["undated"].values()) == 2


def test_runs_report_only_tested_files_and_say_where_the_cut_fell(tmp_path):
    data = with_lineage(n_files=160, big=60)
    spec = ModelSpec("spy", "records its calls", INNER_CV, lambda ctx: SpyEstimator())
    config = RunConfig(folds=4, family_cap=12)
    result = run_evaluation(
        [("fake", data)],
        [spec, *resolve_models(["ngram-lr"])],
        [P.BY_FAMILY, P.TEMPORAL],
        config,
        show_progress=False,
    )
    family_run, temporal_run = result.runs
    plan = P.temporal(data)
    for run in (family_run, temporal_run):
        rows, y, score, _ = per_file(run, run.predictions["spy"])
        if run is temporal_run:
            assert rows.tolist() == plan.folds[0].test.tolist()
        else:
            assert len(rows) == len(data.labels()) - (60 - 12)
    results, paths = write_report(result, tmp_path / "run", command="runtrace evaluate ...", n_resamples=30)
    report = paths["report"].read_text()
    assert "### By family" in report and "apt1 12 of 60" in report and "| apt1 | 12 |" in report
    assert "### Temporal split" in report and f"Cut at **{plan.info['cut']}**" in report
    assert "| dated by | train malicious |" in report and "| debian-changelog |  |  |  |" in report
    assert "**Only on the test side**" in report and "benign files dated by debian-changelog" in report
    by_family = results.result("fake", P.BY_FAMILY, "ngram-lr")
    families = [s for s in by_family.slices if s.dimension == "family"]
    assert families[0].value == "apt1" and families[0].counts.n_benign == 0
    assert families[0]["tpr"].low is not None  # recall with an interval
    temporal = results.result("fake", P.TEMPORAL, "ngram-lr")
    assert temporal.per_file.counts.n == len(plan.folds[0].test)
    assert {s.dimension for s in temporal.slices} >= {"first-seen year", "dated by"}
    dated = {s.value: s for s in temporal.slices if s.dimension == "dated by"}
    assert set(dated) == {"csv-date", "debian-changelog", "pypi-upload"}
    assert dated["debian-changelog"].counts.n_malicious == 0 and dated["debian-changelog"].counts.n_benign > 0
    assert "| dated by | debian-changelog |" in report  # in the per-slice tables
    table = pq.read_table(paths["predictions"]).to_pylist()
    assert {r["fold"] for r in table} >= {0} and all(r["fold"] >= 0 for r in table)
    # The benign files scored highest are those of the predictions file, highest first, with their groups.
    top = temporal.top_benign
    benign = sorted(
        (r for r in table if r["protocol"] == P.TEMPORAL and r["model"] == "ngram-lr" and r["label"] == 0),
        key=lambda r: (-r["score"], r["sha256"]),
    )
    assert [(f.sha256, f.score) for f in top] == [(r["sha256"], r["score"]) for r in benign[:5]]
    groups = dict(
        zip(data.files.column("sha256").to_pylist(), data.files.column("group").to_pylist(), strict=True)
    )
    assert all(f.group == groups[f.sha256] for f in top)
    assert (
        "### Benign files scored highest" in report
        and f"| temporal | ngram-lr | 1 | {top[0].score:.6f} |" in report
    )
    metrics = json.loads(paths["metrics"].read_text())
    info = next(r["info"] for r in metrics["protocol_runs"] if r["protocol"] == "temporal")
    assert info["cut"] == plan.info["cut"]


def test_without_dating_rules_the_temporal_split_has_no_rule_table():
    data = with_lineage()
    files = data.files.drop(["first_seen_source"])
    plain = FakeSequenceDataset("ism", files, [data.sequence(i) for i in range(files.num_rows)], data.lexicon)
    plan = P.temporal(plain, min_per_side=5)
    assert "by_dating_rule" not in plan.info and not any("only on the test side" in n for n in plan.notes)
    assert "by_dating_rule" in P.temporal(data, min_per_side=5).info


def test_hashed_folds_keep_every_groups_fold_when_other_files_come_and_go():
    # As between two tracer revisions: one file falls under the instruction floor and leaves the set.
    data = with_lineage()
    keep = np.arange(1, data.files.num_rows)
    fewer = FakeSequenceDataset(
        "ism", data.files.take(keep), [data.sequence(int(i)) for i in keep], data.lexicon
    )
    shas = np.asarray(data.files.column("sha256").to_pylist())
    for make_plan in (P.by_origin, lambda d, **kw: P.by_family(d, family_cap=0, **kw)):
        folds = []
        for d in (data, fewer):
            plan = make_plan(d, k=5, seed=0, hashed=True)
            P.check_plan(plan, d)
            d_shas = np.asarray(d.files.column("sha256").to_pylist())
            folds.append({s: f.index for f in plan.folds for s in d_shas[f.test]})
        assert all(folds[0][s] == f for s, f in folds[1].items())  # nobody else moved
        assert set(folds[0]) - set(folds[1]) == {shas[0]}
    # Drawn folds deal the groups anew when one file leaves (what hashing avoids).
    drawn = [
        {
            s: f.index
            for f in P.by_origin(d, k=5, seed=0).folds
            for s in np.asarray(d.files.column("sha256").to_pylist())[f.test]
        }
        for d in (data, fewer)
    ]
    assert any(drawn[0][s] != f for s, f in drawn[1].items())

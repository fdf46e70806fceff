import numpy as np
import pyarrow as pa
import pytest

from evaluate_fakes import FakeSequenceDataset, make_dataset
from runtrace.evaluate import protocols as P
from runtrace.evaluate.build_results import file_slices
from runtrace.evaluate.windows import WindowView
from runtrace.represent.windows import WindowConfig


def _shas(data, rows):
    return set(np.asarray(data.files.column("sha256").to_pylist())[rows])


@pytest.mark.parametrize("make_plan", [P.by_file, P.by_origin])
def test_no_file_in_both_train_and_test(make_plan):
    data = make_dataset(n_files=60, n_groups=12)
    plan = make_plan(data, k=5, seed=3)
    assert len(plan.folds) == 5
    test_counts = np.zeros(60, int)
    for fold in plan.folds:
        assert not set(fold.train.tolist()) & set(fold.test.tolist())
        assert not _shas(data, fold.train) & _shas(data, fold.test)
        assert len(fold.train) + len(fold.test) == 60
        test_counts[fold.test] += 1
    assert np.all(test_counts == 1)
    P.check_plan(plan, data)


def test_by_origin_keeps_every_group_on_one_side():
    data = make_dataset(n_files=60, n_groups=12)
    groups = P.origin_groups(data)
    for fold in P.by_origin(data, k=5, seed=1).folds:
        assert not set(groups[fold.train]) & set(groups[fold.test])
    # Files without a known origin are each their own group, not one big "None" group.
    files = data.files.set_column(2, "group", pa.array([None] * 60, pa.string()))
    lone = FakeSequenceDataset("ism", files, [data.sequence(i) for i in range(60)], data.lexicon)
    plan = P.by_origin(lone, k=5)
    assert len(set(P.origin_groups(lone))) == 60 and any("own group" in n for n in plan.notes)


def test_by_origin_refuses_too_few_groups():
    with pytest.raises(P.ProtocolError, match="groups"):
        P.by_origin(make_dataset(n_files=20, n_groups=4), k=5)


def test_folds_follow_sha256_not_row_order():
    data = make_dataset(n_files=40, n_groups=10)
    perm = np.random.default_rng(0).permutation(40)
    shuffled = FakeSequenceDataset(
        "bsm", data.files.take(perm), [data.sequence(i) for i in perm], data.lexicon
    )
    for make_plan in (P.by_file, P.by_origin):
        a = [_shas(data, f.test) for f in make_plan(data, k=5, seed=2).folds]
        b = [_shas(shuffled, f.test) for f in make_plan(shuffled, k=5, seed=2).folds]
        assert a == b


def test_check_plan_catches_a_straddling_group():
    data = make_dataset(n_files=30, n_groups=6)
    plan = P.by_file(data, k=5, seed=0)
    plan.protocol = P.BY_ORIGIN  # files of a group are spread over folds by a by-file split
    with pytest.raises(AssertionError, match="group straddles"):
        P.check_plan(plan, data)


def test_inner_splits_stay_inside_the_training_fold_and_respect_groups():
    data = make_dataset(n_files=60, n_groups=12)
    groups = P.origin_groups(data)
    fold = P.by_origin(data, k=5, seed=0).folds[0]
    splits = P.inner_splits(P.BY_ORIGIN, data, fold.train, 3, seed=5)
    assert len(splits) >= 2
    for fit_rows, val in splits:
        assert set(fit_rows) | set(val) <= set(fold.train)
        assert not set(groups[fit_rows]) & set(groups[val])


def test_leaky_split_puts_windows_of_one_file_on_both_sides():
    data = make_dataset(n_files=20, n_groups=10, length=(300, 600))
    windows = WindowView(data, WindowConfig("sampled", length=50, count=4))
    assert np.all(np.bincount(windows.parent) == 4)
    assert np.array_equal(windows.sequence(1), data.sequence(0)[windows.start[1] : windows.start[1] + 50])
    plan = P.leaky(windows, k=5, seed=0)
    assert plan.unit == "window"
    P.check_plan(plan, windows)  # disjoint windows, but...
    straddling = [
        set(windows.parent[f.train]) & set(windows.parent[f.test]) for f in plan.folds
    ]  # ...the same files on both sides: that is what makes the protocol leaky
    assert all(len(s) > 0 for s in straddling)


def test_slices_cover_arch_kind_and_length():
    data = make_dataset(n_files=30)
    slices = file_slices(data.files, np.arange(30))
    dims = {d for d, _, _ in slices}
    assert {"arch", "kind", "stop_reason", "trace length (instructions)", "API calls"} <= dims
    arch = [m for d, _, m in slices if d == "arch"]
    assert sum(m.sum() for m in arch) == 30
    # Binned counts: every file in exactly one bin, and the bin its count says.
    calls = np.asarray(data.files.column("n_api_calls").to_pylist())
    bins = {v: m for d, v, m in slices if d == "API calls"}
    assert sum(m.sum() for m in bins.values()) == 30
    for value, mask in bins.items():
        lo, _, hi = value.replace(">= ", "").partition("-")
        assert np.all(calls[mask] >= int(lo.replace(",", "")))
        if hi:
            assert np.all(calls[mask] <= int(hi.replace(",", "")))


def test_by_file_keeps_repeated_sha256_rows_together():
    data = make_dataset(n_files=40, n_groups=10)
    shas = data.files.column("sha256").to_pylist()
    shas[2] = shas[0]  # the same executable twice (rows 0 and 2 are both benign, 1 and 3 malicious)
    shas[3] = shas[1]
    files = data.files.set_column(0, "sha256", pa.array(shas))
    twice = FakeSequenceDataset("ism", files, [data.sequence(i) for i in range(40)], data.lexicon)
    plan = P.by_file(twice, k=5)
    P.check_plan(plan, twice)
    assert any("repeat a sha256" in n for n in plan.notes)


def test_window_view_over_a_real_dataset_reads_the_same_tokens():
    from runtrace.represent.synthetic import synthetic_dataset

    data = synthetic_dataset("bsm", 12, min_length=100, max_length=200, seed=3)
    windows = WindowView(data, WindowConfig("sliding", length=40))
    assert len(windows) == len(windows.files)
    # The dataset-level tables a BSM model needs are the dataset's, forwarded by the view.
    assert windows.block_flat is data.block_flat and windows.instruction_lexicon is data.instruction_lexicon
    for k in (0, len(windows) // 2, len(windows) - 1):
        parent, start = int(windows.parent[k]), int(windows.start[k])
        assert np.array_equal(windows.sequence(k), data.sequence(parent)[start : start + 40])
    assert np.array_equal(windows.labels(), data.labels()[windows.parent])


def test_both_views_have_every_member_of_the_protocol_and_the_datasets_settings():
    from runtrace.evaluate.guard import GuardedView
    from runtrace.models.interface import SequenceData
    from runtrace.represent.synthetic import synthetic_dataset

    data = synthetic_dataset("bsm", 12, min_length=100, max_length=200, seed=3)
    views = [GuardedView(data, np.arange(6), "fit"), WindowView(data, WindowConfig("sliding", length=40))]
    members = [name for name in vars(SequenceData) if not name.startswith("_")]
    row_members = {"files", "labels", "groups", "sequence"}  # each view's own rows
    assert row_members < set(members)
    for view in views:
        for name in members:
            assert hasattr(view, name), (type(view).__name__, name)
            if name not in row_members:
                seen, own = getattr(view, name), getattr(data, name)
                assert seen is own or seen == own, (type(view).__name__, name)  # window_defaults: a copy

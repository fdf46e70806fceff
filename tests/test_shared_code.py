"""The toolchain ablation (`models.shared_code.SharedCodeFilter`, the `-noshared` models): what it
removes is learned from training files and their labels only, order is kept, emptied files are scored."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.base import clone

from evaluate_fakes import SpyEstimator, make_dataset
from runtrace.evaluate import protocols as P
from runtrace.evaluate.baselines import NgramLightGBM
from runtrace.evaluate.guard import GuardedView
from runtrace.evaluate.metrics import roc_auc
from runtrace.evaluate.registry import resolve_models
from runtrace.evaluate.runner import RunConfig, run_evaluation
from runtrace.evaluate.write_report import write_report
from runtrace.models.shared_code import FilteredView, SharedCodeFilter
from runtrace.represent.dataset import FILE_SCHEMA, SequenceDataset
from runtrace.represent.encode import BSM

N_BLOCKS = 30
API = "api:kernel32.exitprocess"
CRT = (20, 21, 22)  # the "start-up" blocks every file runs first, in the datasets below
MOTIF = (0, 1)  # malicious files only
EXIT = N_BLOCKS  # the API pseudo-block's id


def _bsm(sequences: list[np.ndarray], labels: list[int]) -> SequenceDataset:
    """A BSM dataset over N_BLOCKS code blocks (ids 0..N_BLOCKS-1) and one API pseudo-block (EXIT)."""
    files = pa.Table.from_pylist(
        [
            {
                "sha256": f"{i:064x}",
                "label": label,
                "group": f"g{i}",
                "arch": "x86",
                "kind": "exe",
                "n_instructions": 3 * len(s),
                "stop_reason": "exited",
                "source": "synthetic",
                "n_tokens": len(s),
                "n_api_calls": 0,
            }
            for i, (label, s) in enumerate(zip(labels, sequences, strict=True))
        ],
        schema=FILE_SCHEMA,
    )
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    # Block k holds k % 4 + 1 instructions; the API pseudo-block holds its name.
    contents = [np.full(k % 4 + 1, k % 7, dtype=np.uint16) for k in range(N_BLOCKS)] + [
        np.array([7], np.uint16)
    ]
    block_offsets = np.zeros(len(contents) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in contents], out=block_offsets[1:])
    return SequenceDataset(
        BSM,
        files,
        [f"b:{k:020x}" for k in range(N_BLOCKS)] + [API],
        np.concatenate(sequences).astype(np.uint16),
        offsets,
        normalisation="registers",
        api=True,
        instruction_lexicon=[f"insn{k}" for k in range(8)],
        block_tokens=np.concatenate(contents),
        block_offsets=block_offsets,
    )


def _corpus(n_files: int = 40, seed: int = 0, crt_in=lambda i, label: True) -> SequenceDataset:
    """Every file (where `crt_in`) starts with the CRT blocks and ends calling EXIT; malicious files run
    the MOTIF somewhere; the rest are random blocks 2..19."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n_files)]
    sequences = []
    for i, label in enumerate(labels):
        body = rng.integers(2, 20, size=int(rng.integers(10, 40)))
        if label:
            at = int(rng.integers(0, len(body) - 1))
            body[at : at + 2] = MOTIF
        start = list(CRT) if crt_in(i, label) else []
        sequences.append(np.array([*start, *body.tolist(), EXIT], dtype=np.int64))
    return _bsm(sequences, labels)


def _removed(data, train, min_share=0.5) -> set[int]:
    f = SharedCodeFilter(SpyEstimator(), min_share=min_share).fit(GuardedView(data, train, "fit"), train)
    return set(f.removed_.tolist())


def test_code_shared_by_both_classes_is_removed_and_the_rest_kept():
    data = _corpus()
    removed = _removed(data, np.arange(40))
    assert set(CRT) <= removed
    assert not set(MOTIF) & removed  # malicious files only
    assert EXIT not in removed  # an API call is behaviour, never toolchain code, however common


def test_a_block_found_only_in_test_files_is_never_removed():
    # The CRT blocks run in every *test* file of both classes and in no training file.
    test = np.arange(30, 40)
    data = _corpus(crt_in=lambda i, label: i >= 30)
    train = np.arange(30)
    assert not set(CRT) & _removed(data, train)
    # ... while the same blocks in the training files are removed.
    assert set(CRT) <= _removed(_corpus(), train)
    # Scoring cannot change the fitted set.
    f = SharedCodeFilter(SpyEstimator()).fit(GuardedView(data, train, "fit"), train)
    before = f.removed_.copy()
    f.predict_proba(GuardedView(data, test, "predict"), test)
    assert np.array_equal(f.removed_, before)


def test_the_removed_set_depends_on_training_labels_only():
    # CRT blocks in every malicious file but only in the benign files of the test fold.
    train = np.arange(30)
    data = _corpus(crt_in=lambda i, label: label == 1 or i >= 30)
    assert not set(CRT) & _removed(data, train)  # in no benign *training* file: not shared
    # Flipping every test label changes nothing (a guarded view hides them anyway; here they are shown).
    flipped = _bsm(
        [data.sequence(i) for i in range(40)],
        [int(y) if i < 30 else 1 - int(y) for i, y in enumerate(data.labels())],
    )
    unguarded = SharedCodeFilter(SpyEstimator()).fit(flipped, train)
    assert set(unguarded.removed_.tolist()) == _removed(data, train)
    # Training labels do change it: call 10 of the malicious training files benign, and 10 of 25 benign
    # training files run the CRT blocks.
    relabelled = _bsm(
        [data.sequence(i) for i in range(40)], [int(y) if i >= 20 else 0 for i, y in enumerate(data.labels())]
    )
    assert not set(CRT) & _removed(data, train, min_share=0.3)
    assert set(CRT) <= _removed(relabelled, train, min_share=0.3)


def test_a_fold_with_one_class_removes_nothing():
    data = _corpus()
    benign = np.flatnonzero(data.labels() == 0)
    assert _removed(data, benign) == set()


def test_filtering_keeps_the_order_of_what_is_left_and_the_inner_model_sees_only_that():
    data = _corpus()
    removed = np.zeros(len(data.lexicon), dtype=bool)
    removed[list(CRT)] = True
    view = FilteredView(data, removed)
    for i in range(5):
        original = data.sequence(i)
        assert np.array_equal(view.sequence(i), [t for t in original.tolist() if t not in CRT])

    seen = []

    class Recorder(SpyEstimator):
        def fit(self, data, train_idx):
            seen.extend(np.asarray(data.sequence(i)).tolist() for i in train_idx)
            return self

    SharedCodeFilter(Recorder()).fit(data, np.arange(40))
    assert len(seen) == 40 and not any(set(CRT) & set(s) for s in seen)
    assert all(s[-1] == EXIT for s in seen)


def test_a_file_whose_every_block_is_shared_still_gets_a_score():
    data = _corpus()
    sequences = [data.sequence(i) for i in range(40)]
    labels = data.labels().tolist()
    sequences[3] = np.array(CRT, dtype=np.int64)  # training file, nothing but shared code
    sequences[38] = np.array([*CRT, *CRT], dtype=np.int64)  # test file, likewise
    data = _bsm(sequences, labels)
    train, test = np.arange(36), np.arange(36, 40)
    model = SharedCodeFilter(NgramLightGBM(max_features=200)).fit(GuardedView(data, train, "fit"), train)
    assert model.shared_code_["train_files_emptied"] == 1
    scores = model.predict_proba(GuardedView(data, test, "predict"), test)
    assert scores.shape == (4,) and np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    # One emptied training file (label of row 3), pulled towards the training prior by one pseudo-file.
    prior = data.labels()[train].mean()
    assert scores[2] == pytest.approx((labels[3] + prior) / 2)
    assert model.shared_code_["scored_files_emptied"] == 1

    # Every training file emptied: no inner model, every file scored with the prior.
    empty = _bsm([np.array(CRT, dtype=np.int64)] * 10, [0, 1] * 5)
    model = SharedCodeFilter(SpyEstimator()).fit(empty, np.arange(8))
    assert not model.inner_fitted_
    assert np.allclose(model.predict_proba(empty, np.arange(8, 10)), 0.5)


def test_the_report_figures_count_positions_and_instructions():
    data = _corpus(n_files=10)
    model = SharedCodeFilter(SpyEstimator(), min_share=1.0).fit(data, np.arange(10))
    assert model.removed_.tolist() == list(CRT)  # in every file of both classes; nothing else is
    assert model.shared_code_["removed_blocks"] == 3
    seqs = [data.sequence(i) for i in range(10)]
    total = sum(len(s) for s in seqs)
    assert model.shared_code_["train_positions_removed"] == pytest.approx(3 * 10 / total)
    sizes = np.array([k % 4 + 1 for k in range(N_BLOCKS)] + [0])  # the API pseudo-block holds no code
    instructions = sum(int(sizes[s].sum()) for s in seqs)
    crt_instructions = 10 * int(sizes[list(CRT)].sum())
    assert model.shared_code_["train_instructions_removed"] == pytest.approx(crt_instructions / instructions)
    # Each CRT block runs once per file; block 20 holds one instruction, "insn6" (see `_bsm`).
    top = model.shared_code_["top_removed"]
    assert [t["share"] for t in top] == pytest.approx([10 / total] * 3)
    assert top[0]["block"] == "insn6"


def test_scikit_learn_conventions():
    model = SharedCodeFilter(NgramLightGBM(seed=3), min_share=0.3)
    assert model.get_params()["min_share"] == 0.3
    copy = clone(model)
    assert copy.min_share == 0.3 and copy.inner is not model.inner and copy.inner.seed == 3
    assert not hasattr(copy, "removed_")
    assert copy.set_params(min_share=0.7).min_share == 0.7
    data = _corpus()
    fitted = clone(model).fit(data, np.arange(40))
    assert not hasattr(model, "removed_")  # the original is untouched
    assert set(CRT) <= set(fitted.removed_.tolist())


def test_refuses_ism_and_bad_shares():
    with pytest.raises(ValueError, match="BSM"):
        SharedCodeFilter(SpyEstimator()).fit(make_dataset(n_files=10), np.arange(10))
    with pytest.raises(ValueError, match="min_share"):
        SharedCodeFilter(SpyEstimator(), min_share=0.0).fit(_corpus(), np.arange(40))


def test_the_ablation_learns_without_the_shared_code():
    data = _corpus(n_files=60, seed=2)
    train = np.sort(np.random.default_rng(0).permutation(60)[:30])
    test = np.setdiff1d(np.arange(60), train)
    model = SharedCodeFilter(NgramLightGBM(max_features=500)).fit(GuardedView(data, train, "fit"), train)
    scores = model.predict_proba(GuardedView(data, test, "predict"), test)
    assert roc_auc(data.labels()[test], scores) > 0.9


def test_evaluate_runs_the_noshared_variants_and_reports_what_they_removed(tmp_path):
    bsm = _corpus(n_files=40, seed=1)
    ism = make_dataset(n_files=40, n_groups=10)
    models = resolve_models(["ngram-lr", "ngram-lr-noshared"])
    config = RunConfig(folds=3, model_options={"ngram-lr-noshared": {"min_share": 0.4}})
    result = run_evaluation([("b", bsm), ("i", ism)], models, [P.BY_FILE], config, show_progress=False)
    by_name = {r.representation: r for r in result.runs}
    assert "ngram-lr-noshared" in by_name["ism"].skipped  # BSM only, said so
    folds = by_name["bsm"].predictions["ngram-lr-noshared"].folds
    assert len(folds) == 3
    for record in folds:
        summary = record.shared_code
        assert summary["min_share"] == 0.4 and summary["removed_blocks"] >= len(CRT)
        assert summary["train_files"] == record.n_train and summary["scored_files"] == record.n_test
        assert 0 < summary["train_positions_removed"] < 1
    assert by_name["bsm"].predictions["ngram-lr"].folds[0].shared_code is None
    _, paths = write_report(result, tmp_path / "run", command="runtrace evaluate ...", n_resamples=20)
    report = paths["report"].read_text()
    assert "### Toolchain ablation" in report
    assert "| by-file | ngram-lr-noshared |" in report
    assert "took the most executed positions" in report

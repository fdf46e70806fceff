"""The shortcut audit: features from manifest rows, the sklearn-style estimator, grouped CV figures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from runtrace.corpus.audit import (
    BASE_FEATURES,
    MetadataShortcutClassifier,
    audit_markdown,
    joined_groups,
    metadata_features,
    run_audit,
)


def _rows(n: int, confounded: bool, seed: int = 0, traced: bool = False) -> list[dict]:
    """Synthetic manifest rows.  Confounded: benign are amd64 DLLs (linker 2.39), malware i386 EXEs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        malicious = i % 2 == 0
        if confounded:
            arch, kind = ("i386", "exe") if malicious else ("amd64", "dll")
            linker = 6.0 if malicious else 2.39
        else:
            arch, kind = rng.choice(["i386", "amd64"]), rng.choice(["exe", "dll"])
            linker = float(rng.choice([2.39, 6.0, 14.29]))
        rows.append(
            {
                "sha256": f"{i:064x}",
                "label": "malicious" if malicious else "benign",
                "origin_group": f"g{i % 40}",
                "arch": str(arch),
                "kind": str(kind),
                "size": int(rng.integers(1_000, 1_000_000)),
                "linker_version": linker,
                "section_count": int(rng.integers(3, 8)),
                "import_count": int(rng.integers(0, 300)),
                "instruction_count": int(rng.integers(0, 10**6)) if traced else None,
                "stop_reason": str(rng.choice(["exited", "instruction_cap"])) if traced else None,
            }
        )
    return rows


def test_features_encode_categories_with_fixed_codes_and_nan_for_unknown():
    rows = _rows(4, confounded=True)
    rows[1]["kind"] = "weird"
    rows[2]["size"] = None
    X, names = metadata_features(rows)
    assert names == list(BASE_FEATURES)
    assert X[0, names.index("arch")] == 0 and X[1, names.index("arch")] == 1
    assert np.isnan(X[1, names.index("kind")]) and np.isnan(X[2, names.index("size")])
    X, names = metadata_features(_rows(4, confounded=True, traced=True), include_trace=True)
    assert names[-2:] == ["trace_length", "stop_reason"] and not np.isnan(X).any()


def test_missing_trace_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="no 'instruction_count' column"):
        metadata_features([{"label": "benign"} | {k: 1 for k in BASE_FEATURES}], include_trace=True)


def test_estimator_is_sklearn_compatible_and_accepts_rows_or_matrices():
    rows = _rows(200, confounded=True)
    y = np.array([r["label"] == "malicious" for r in rows], dtype=int)
    model = clone(MetadataShortcutClassifier()).fit(rows, y)
    proba = model.predict_proba(rows)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
    assert model.score(rows, y) > 0.95
    X, names = metadata_features(rows)
    by_matrix = MetadataShortcutClassifier(feature_names=names).fit(X, y)
    assert np.allclose(by_matrix.predict_proba(X), proba)
    assert by_matrix.feature_importances_.sum() == pytest.approx(1.0)


def test_one_class_training_falls_back_to_a_constant():
    rows = _rows(10, confounded=True)
    model = MetadataShortcutClassifier().fit(rows, np.ones(10, dtype=int))
    assert np.allclose(model.predict_proba(rows)[:, 1], 1.0)


def test_audit_flags_a_confounded_corpus_and_not_a_clean_one():
    bad = run_audit(_rows(200, confounded=True), single_features=True)
    assert bad.auc > 0.95 and bad.accuracy > 0.9
    assert max(bad.single_feature_auc.values()) > 0.95
    assert bad.n_groups == 40 and bad.folds == 5 and len(bad.fold_aucs) == 5
    clean = run_audit(_rows(300, confounded=False, seed=1), single_features=False)
    assert 0.35 < clean.auc < 0.65
    assert clean.auc_ci[0] < clean.auc < clean.auc_ci[1]
    text = audit_markdown([bad, clean])
    assert "| all |" in text and "linker_version" in text


def test_audit_refuses_a_single_class():
    rows = [r | {"label": "benign"} for r in _rows(20, confounded=True)]
    with pytest.raises(ValueError, match="both classes"):
        run_audit(rows)


def test_matched_pairs_never_straddle_folds():
    groups = ["a", "b", "c", "d", "e"]
    pairs = ["p1", "p1", None, "p2", "p2"]
    joined = joined_groups(groups, pairs)
    assert joined[0] == joined[1] and joined[3] == joined[4] and len(set(joined)) == 3
    # Pairs chain through shared origin groups: a-b paired, b-c paired -> one component.
    joined = joined_groups(["a", "b", "b", "c"], ["p1", "p1", "p2", "p2"])
    assert len(set(joined)) == 1

"""Which sets of manifest rows `runtrace corpus audit` audits, and what the report says about each.

Always the whole corpus and/or its metadata-matched subset; on request also the draw `dataset build
--match` would make over every file (`match preview`) and exactly the files of a built dataset
(`training set`: what the models train on, grouped as the dataset groups them), those two first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runtrace.corpus.audit import AuditResult, run_audit

ALL, MATCHED, BOTH = "all", "matched", "both"
MATCH_PREVIEW, TRAINING_SET = "match preview", "training set"


@dataclass
class AuditSets:
    subsets: dict[str, list[dict]]  # name -> manifest rows
    audited: list[str]  # the subsets audited, in the order they are reported
    notes: list[str] = field(default_factory=list)  # Markdown: what an audited set is

    @property
    def training_rows(self) -> list[dict] | None:
        return self.subsets.get(TRAINING_SET)


def dataset_rows(dataset: Path, rows: list[dict]) -> tuple[list[dict], str]:
    """The manifest rows of exactly the files of the dataset at `dataset`, each with the dataset's CV
    group, and a note saying how the dataset drew them; ValueError (one line, naming the dataset) when it
    cannot be read or has files the manifest lacks.  (The dataset is read as files: `corpus` sits beside
    `represent` and does not import it.)"""
    dataset = Path(dataset)
    try:
        files = pq.read_table(dataset / "files.parquet", columns=["sha256", "group"]).to_pylist()
        meta = json.loads((dataset / "dataset.json").read_text()).get("meta") or {}
    except (OSError, ValueError, pa.ArrowInvalid) as e:
        raise ValueError(f"{dataset}: not a readable dataset ({e})") from None
    group_of = {f["sha256"]: f["group"] for f in files}
    chosen = [dict(r, cv_group=group_of[r["sha256"]], match_id=None) for r in rows if r["sha256"] in group_of]
    if len(chosen) < len(group_of):
        raise ValueError(f"{dataset}: {len(group_of) - len(chosen)} of its files are not in the manifest")
    match = meta.get("match")
    how = (
        f"drawn by `--match` (ratio {match['ratio']}; {sum(n for *_, n in match['unmatched'])} malicious "
        "files without a look-alike left out)"
        if match
        else "all labelled traces"
    )
    note = (
        f"*training set*: exactly the {len(chosen)} files of the dataset `{dataset}` "
        f"(min. instructions {meta.get('min_instructions', 0)}), {how}, grouped as the dataset groups them."
    )
    if match and match["unmatched"]:
        rows_md = [f"| {' | '.join(map(str, k))} | {n} |" for *k, n in match["unmatched"][:15]]
        note += "\n\nMalware without a look-alike (largest strata):\n\n" + "\n".join(
            ["| arch | kind | toolchain | linker era | malicious files |", "|---|---|---|---|---:|", *rows_md]
        )
    return chosen, note


def audit_sets(
    rows: list[dict], subset: str = BOTH, match_preview: bool = False, dataset: Path | None = None
) -> AuditSets:
    """The sets to audit: `subset` (all, matched or both), after the match preview and the dataset's
    files when asked for.  ValueError (one line) for a dataset that cannot be used."""
    sets = AuditSets({ALL: rows, MATCHED: [r for r in rows if r.get("matched")]}, [ALL, MATCHED])
    if subset != BOTH:
        sets.audited = [str(subset)]
    if match_preview:
        from runtrace.corpus.matching import match_rows

        drawn = match_rows(rows)
        sets.subsets[MATCH_PREVIEW] = [dict(r, match_id=None) for r in drawn.rows]
        sets.audited.insert(0, MATCH_PREVIEW)
        sets.notes.append(
            f"*match preview*: `match_rows` over every file, traced or not: {drawn.n_malicious} malicious "
            f"files with {drawn.partners} benign partners; {sum(drawn.unmatched.values())} malicious files "
            "without a look-alike left out."
        )
    if dataset is not None:
        sets.subsets[TRAINING_SET], note = dataset_rows(dataset, rows)
        sets.audited.insert(0, TRAINING_SET)
        sets.notes.insert(0, note)
    return sets


def audit_all(
    sets: AuditSets, include_trace: bool, extended: bool = False, folds: int = 5, seed: int = 0
) -> list[AuditResult]:
    """`run_audit` on every audited set (twice with `extended`: without and with the extended
    features); ValueError naming the set that cannot be audited."""
    results = []
    for name in sets.audited:
        for ext in [False, True] if extended else [False]:
            try:
                results.append(run_audit(sets.subsets[name], include_trace, ext, folds, seed, subset=name))
            except ValueError as e:
                raise ValueError(f"{name} subset: {e}") from None
    return results

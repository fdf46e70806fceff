"""Renders a run's report.md from its result document: per-file figures first, then the paper, the leaky
split's inflation, the shortcut audit, slices, folds and plots, each section labelled for what it is."""

from __future__ import annotations

from runtrace.evaluate.build_results import FAMILY_DIMENSION, TRAIT_COLUMNS, YEAR_DIMENSION
from runtrace.evaluate.lineage import unseen_before_cut
from runtrace.evaluate.names import NOSHARED_SUFFIX
from runtrace.evaluate.paper import PAPER
from runtrace.evaluate.protocols import BY_FAMILY, BY_FILE, BY_ORIGIN, LEAKY, TEMPORAL
from runtrace.evaluate.result_document import (
    Counts,
    DatasetInfo,
    Estimate,
    EvaluationResults,
    ProtocolRunInfo,
)

AUDIT_MARGIN = 0.05  # metadata-only AUC this close to the best sequence model's means a confounded corpus
METADATA_MODEL = "metadata"

PROTOCOL_ORDER = {BY_FILE: 0, BY_ORIGIN: 1, BY_FAMILY: 2, TEMPORAL: 3, LEAKY: 4}
LINEAGE_DIMENSIONS = (FAMILY_DIMENSION, YEAR_DIMENSION)

SUMMARY_COLUMNS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "bal. acc."),
    ("fpr", "FPR"),
    ("tpr", "TPR"),
    ("precision", "precision"),
    ("f1", "F1"),
    ("roc_auc", "ROC-AUC"),
    ("tpr_at_fpr_1pct", "TPR@FPR 1 %"),
    ("tpr_at_fpr_0.1pct", "TPR@FPR 0.1 %"),
)


def _fmt(estimate: Estimate, key: str) -> str:
    v, low, high = estimate.value, estimate.low, estimate.high
    if v is None:
        return "n/a"
    if key == "roc_auc":
        return f"{v:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")
    return f"{100 * v:.1f} %" + (f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")


def _counts(c: Counts) -> str:
    return f"{c.tp}/{c.fp}/{c.tn}/{c.fn} (n={c.n})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def view_keys(results: EvaluationResults) -> dict[str, str]:
    """A short, unique name per dataset for headings and file names ("ism", or "ism-2" when repeated)."""
    keys, seen = {}, {}
    for d in results.datasets:
        seen[d.representation] = seen.get(d.representation, 0) + 1
        n = seen[d.representation]
        keys[d.name] = d.representation if n == 1 else f"{d.representation}-{n}"
    return keys


def render_report(results: EvaluationResults, plot_paths: dict, keys: dict) -> str:
    cfg = results.config
    lines = [
        f"# runtrace evaluation: {results.run}",
        "",
        f"- command: `{results.command}`",
        f"- date (UTC): {results.date}",
        f"- machine: {results.machine.describe()}",
        f"- folds: k = {cfg.folds}, seed {cfg.seed}; thresholds fitted on training folds only "
        f"({cfg.threshold_fit}) for a target FPR of {100 * cfg.target_fpr:g} %",
        f"- intervals: 95 % stratified bootstrap over files, "
        f"{results.bootstrap.n_resamples} resamples, seed {results.bootstrap.seed}",
        f"- leaky protocol windows: {_window_text(results, keys)}",
        "",
        "## Datasets",
        "",
    ]
    lines += _table(
        [
            "key",
            "path",
            "representation",
            "files",
            "malicious / benign",
            "lexicon",
            "fingerprint",
            "manifest",
        ],
        [
            [
                keys[d.name],
                f"`{d.name}`",
                d.representation,
                str(d.files),
                f"{_known(d.malicious)} / {_known(d.benign)}",
                str(d.lexicon),
                f"`{d.fingerprint[:16]}`",
                f"`{d.manifest_sha256}`" if d.manifest_sha256 else "n/a",
            ]
            for d in results.datasets
        ],
    )
    lines += [
        "Every figure below is **per file**, with its 95 % interval in brackets and the counts behind it "
        "(TP/FP/TN/FN).  Decisions use the threshold each fold chose on its own training data; ROC-AUC and "
        "TPR at a fixed FPR are ranking figures (the best TPR the ROC curve reaches at that FPR), needing no "
        "threshold.  *by-file* is the primary protocol; *by-origin* keeps benign packages and malware "
        "families out of test when they are in train; *by-family* keeps every malware family (actor, "
        "report, family label) on one side, with at most a fixed number of files per family; *temporal* "
        "trains on files first seen before a cut date and tests on later ones; *leaky* (windows split at "
        "random, regardless of file) is shown only to measure how much such a split inflates results.",
        "",
    ]
    if results.skipped_protocols:
        lines += ["Protocols not run:", ""] + [f"- {s}" for s in results.skipped_protocols] + [""]

    for d in results.datasets:
        runs = [r for r in results.protocol_runs if r.dataset == d.name]
        if not runs:
            continue
        key = keys[d.name]
        lines += [f"## {key.upper()}: `{d.name}`", "", "### Per-file results", ""]
        rows = []
        for run in sorted(runs, key=lambda r: (PROTOCOL_ORDER.get(r.protocol, 9), r.protocol)):
            for model in results.models(run.dataset, run.protocol):
                e = results.result(run.dataset, run.protocol, model).per_file
                rows.append(
                    [run.protocol, model] + [_fmt(e[k], k) for k, _ in SUMMARY_COLUMNS] + [_counts(e.counts)]
                )
            for model, why in run.skipped_models.items():
                rows.append([run.protocol, model] + ["not run"] * len(SUMMARY_COLUMNS) + [why])
        lines += _table(["protocol", "model"] + [h for _, h in SUMMARY_COLUMNS] + ["TP/FP/TN/FN"], rows)
        lines += _resolution_notes(runs, results)
        lines += _paper_section(d, runs, results)
        lines += _inflation_section(runs, results)
        lines += _audit_section(runs, results)
        lines += _shared_code_section(runs, results)
        lines += _lineage_section(runs, results)
        lines += _slice_section(runs, results)
        lines += _top_benign_section(runs, results)
        lines += _fold_section(runs, results)
        lines += ["### Plots", ""]
        for run in runs:
            for p in plot_paths.get((run.dataset, run.protocol), []):
                lines.append(f"![{p}]({p})")
        lines.append("")
        notes = [n for r in runs for n in r.notes]
        if notes:
            lines += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines) + "\n"


def _resolution_notes(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    """Say, per protocol, when too few benign files were tested to measure TPR at 1 % or 0.1 % FPR."""
    lines = []
    for run in sorted(runs, key=lambda r: PROTOCOL_ORDER.get(r.protocol, 9)):
        models = results.models(run.dataset, run.protocol)
        if not models:
            continue
        benign = results.result(run.dataset, run.protocol, models[0]).per_file.counts.n_benign
        limited = [t for t in (0.01, 0.001) if benign * t < 1]
        if limited:
            lines.append(
                f"- {run.protocol}: with {benign} benign files tested, FPR moves in steps of 1/{benign}: "
                f"TPR@FPR {' and '.join('1 %' if t == 0.01 else '0.1 %' for t in limited)} "
                "can only be measured as TPR at FPR = 0 here."
            )
    return lines + [""] if lines else []


def _lineage_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    """by-family: the cap and recall of the largest families; temporal: the cut and files per year."""
    lines: list[str] = []
    for run in runs:
        models = results.models(run.dataset, run.protocol)
        if run.protocol == BY_FAMILY and models:
            lines += _family_section(run, models, results)
        if run.protocol == TEMPORAL and models:
            lines += _temporal_section(run)
    return lines


def _family_section(run: ProtocolRunInfo, models: list[str], results: EvaluationResults) -> list[str]:
    info = run.info
    capped = info.get("capped") or {}
    cap = (
        f"At most {info.get('family_cap')} files per family, drawn at random: "
        + ", ".join(f"{f} {kept} of {n}" for f, (n, kept) in capped.items())
        + "."
        if capped
        else "No family was over the cap."
    )
    with_family, without = info.get("malicious_with_family", "?"), info.get("malicious_without_family", "?")
    table: dict[str, dict[str, str]] = {}
    sizes: dict[str, int] = {}
    for model in models:
        for sl in results.result(run.dataset, run.protocol, model).slices:
            if sl.dimension == FAMILY_DIMENSION:
                table.setdefault(sl.value, {})[model] = _fmt(sl["tpr"], "tpr")
                sizes[sl.value] = sl.counts.n_malicious
    return [
        "### By family",
        "",
        f"{info.get('families', '?')} families; {with_family} malicious files with a family and {without} "
        f"without (each its own group). {cap}",
        "",
        "Recall (TPR at each fold's training-fold threshold) on the largest families, with 95 % intervals; "
        "a family is tested only by a model that saw none of its files in training.",
        "",
    ] + _table(
        ["family", "files tested", *models],
        [[f, str(sizes[f]), *(table[f].get(m, "n/a") for m in models)] for f in table],
    )


def _temporal_section(run: ProtocolRunInfo) -> list[str]:
    info = run.info
    by_year: dict[int, dict[tuple[str, str], int]] = {}
    for rec in info.get("by_year", []):
        by_year.setdefault(rec["year"], {})[(rec["side"], rec["label"])] = rec["files"]
    undated = info.get("undated", {})
    cells = [("train", "malicious"), ("train", "benign"), ("test", "malicious"), ("test", "benign")]
    lines = [
        "### Temporal split",
        "",
        f"Cut at **{info.get('cut')}** ({info.get('rule')}): training files were first seen before it, test "
        f"files on or after it. Undated files sit out ({undated.get('malicious', 0)} malicious, "
        f"{undated.get('benign', 0)} benign). Files per year of first sighting:",
        "",
    ]
    lines += _table(
        ["year", "train malicious", "train benign", "test malicious", "test benign"],
        [[str(y), *(str(by_year[y].get(c, "")) for c in cells)] for y in sorted(by_year)],
    )
    return lines + _dating_rule_lines(info.get("by_dating_rule", []), cells)


def _dating_rule_lines(records: list[dict], cells: list[tuple[str, str]]) -> list[str]:
    """Files per dating rule on each side of the cut, and the sources only the test side has: there the
    temporal figure measures a source the model never saw as well as the passing of time."""
    if not records:
        return []
    by_rule: dict[str, dict[tuple[str, str], int]] = {}
    for rec in records:
        by_rule.setdefault(rec["dated_by"], {})[(rec["side"], rec["label"])] = rec["files"]
    lines = ["Files per dating rule (the manifest's `first_seen_source`, which follows the source):", ""]
    lines += _table(
        ["dated by", "train malicious", "train benign", "test malicious", "test benign"],
        [[rule, *(str(by_rule[rule].get(c, "")) for c in cells)] for rule in sorted(by_rule)],
    )
    unseen = unseen_before_cut(records)
    if unseen:
        listed = "; ".join(f"{r['files']} {r['label']} files dated by {r['dated_by']}" for r in unseen)
        lines += [
            f"**Only on the test side**: {listed}. No training file was dated that way, so for these files "
            "the split also asks whether the model knows a source it never saw, not only whether it "
            "holds over time; the per-slice results say how they fare.",
            "",
        ]
    return lines


def _known(n: int | None) -> str:
    return "?" if n is None else str(n)


def _window_text(results: EvaluationResults, keys: dict[str, str]) -> str:
    parts = []
    for r in results.protocol_runs:
        if r.window:
            w = r.window
            count = f", {w['count']} per file" if w["mode"] == "sampled" else ""
            parts.append(f"{keys[r.dataset]}: {w['mode']}, {w['length']} tokens{count}")
    return "; ".join(parts) or "not run"


def _paper_section(d: DatasetInfo, runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    paper = PAPER.get(d.representation)
    if paper is None:
        return []
    rows = [["paper (split not stated)", "-", f"{100 * paper[0]:.2f} %", f"{100 * paper[1]:.2f} %"]]
    for run in runs:
        if "lstm" not in results.models(run.dataset, run.protocol):
            continue
        e = results.result(run.dataset, run.protocol, "lstm")
        for label, block in (("training-fold threshold", e.per_file), ("fixed 0.5", e.per_file_at_fixed)):
            rows.append(
                [
                    f"runtrace LSTM, {run.protocol}",
                    label,
                    _fmt(block["accuracy"], "accuracy"),
                    _fmt(block["fpr"], "fpr"),
                ]
            )
    if len(rows) == 1:
        rows.append(["runtrace LSTM", "not run", "n/a", "n/a"])
    return ["### Against the paper", ""] + _table(["source", "threshold", "accuracy", "FPR"], rows)


def _inflation_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    leaky = next((r for r in runs if r.protocol == LEAKY), None)
    grouped = next((r for r in runs if r.protocol == BY_FILE), None)
    if leaky is None:
        return []
    rows = []
    for model in results.models(leaky.dataset, LEAKY):
        lk = results.result(leaky.dataset, LEAKY, model)
        window = lk.per_window.metrics if lk.per_window is not None else {}
        row = [
            model,
            f"{100 * window['accuracy']:.1f} %" if window.get("accuracy") is not None else "n/a",
            f"{window['roc_auc']:.3f}" if window.get("roc_auc") is not None else "n/a",
            _fmt(lk.per_file["accuracy"], "accuracy"),
            _fmt(lk.per_file["roc_auc"], "roc_auc"),
        ]
        if grouped is not None and model in results.models(grouped.dataset, BY_FILE):
            bf = results.result(grouped.dataset, BY_FILE, model).per_file
            lf = lk.per_file
            row += [_fmt(bf["accuracy"], "accuracy"), _fmt(bf["roc_auc"], "roc_auc")]
            delta = [
                lf[k].value - bf[k].value
                for k in ("accuracy", "roc_auc")
                if lf[k].value is not None and bf[k].value is not None
            ]
            row.append(f"{100 * delta[0]:+.1f} pts" if delta else "n/a")
        else:
            row += ["n/a", "n/a", "n/a"]
        rows.append(row)
    return [
        "### Leaky split inflation",
        "",
        "Window-level figures (no interval: windows of one file are not independent) beside per-file "
        "ones; the last column is leaky minus by-file accuracy, per file.",
        "",
    ] + _table(
        [
            "model",
            "leaky acc. (windows)",
            "leaky AUC (windows)",
            "leaky acc. (files)",
            "leaky AUC (files)",
            "by-file acc.",
            "by-file AUC",
            "inflation",
        ],
        rows,
    )


def _audit_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    lines = []
    features = next(
        (
            f.features
            for r in runs
            if METADATA_MODEL in results.models(r.dataset, r.protocol)
            for f in results.result(r.dataset, r.protocol, METADATA_MODEL).folds
        ),
        None,
    )
    if features is not None:
        lines.append(
            f"- the metadata model saw {', '.join(features) or 'no column'}"
            + (
                ""
                if "size" in features
                else "; size, linker version, section and import counts need `--manifest`"
            )
            + "."
        )
    for run in runs:
        models = results.models(run.dataset, run.protocol)
        if METADATA_MODEL not in models or run.protocol == LEAKY:
            continue
        meta = results.result(run.dataset, run.protocol, METADATA_MODEL).per_file["roc_auc"]
        others = {
            m: results.result(run.dataset, run.protocol, m).per_file["roc_auc"]
            for m in models
            if m != METADATA_MODEL
        }
        others = {m: e for m, e in others.items() if e.value is not None}
        if meta.value is None:
            continue
        if not others:
            lines.append(
                f"- {run.protocol}: metadata-only AUC {_fmt(meta, 'roc_auc')}; no sequence model to compare."
            )
            continue
        best = max(others, key=lambda m: others[m].value)
        gap = others[best].value - meta.value
        verdict = (
            "**confounded**: metadata alone comes within "
            f"{AUDIT_MARGIN:.2f} AUC of the best sequence model, so its figure says little about behaviour; "
            "fix the corpus, not the model"
            if gap <= AUDIT_MARGIN
            else "metadata alone falls clearly short of the sequence models"
        )
        lines.append(
            f"- {run.protocol}: metadata-only AUC {_fmt(meta, 'roc_auc')} vs {best} "
            f"{_fmt(others[best], 'roc_auc')} (gap {gap:+.3f}): {verdict}."
        )
    return ["### Shortcut audit", ""] + lines + [""] if lines else []


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _pair(summary: dict, key: str) -> str:
    """A training share and the test fold's, "a / b"."""
    return f"{_share(summary.get('train_' + key))} / {_share(summary.get('scored_' + key))}"


def _shared_code_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    """The toolchain ablation ("-noshared" models): each beside the model it wraps, then what each fold
    removed."""
    compared, removed, examples = [], [], []
    for run in sorted(runs, key=lambda r: (PROTOCOL_ORDER.get(r.protocol, 9), r.protocol)):
        models = results.models(run.dataset, run.protocol)
        for model in models:
            result = results.result(run.dataset, run.protocol, model)
            folds = [f for f in result.folds if f.shared_code]
            if not folds:
                continue
            base = model.removesuffix(NOSHARED_SUFFIX)
            row = [run.protocol, model]
            for key in ("roc_auc", "tpr_at_fpr_1pct"):
                without = result.per_file[key]
                if base in models:
                    with_ = results.result(run.dataset, run.protocol, base).per_file[key]
                    delta = (
                        "n/a"
                        if with_.value is None or without.value is None
                        else (
                            f"{without.value - with_.value:+.3f}"
                            if key == "roc_auc"
                            else f"{100 * (without.value - with_.value):+.1f} pts"
                        )
                    )
                    row += [_fmt(with_, key), _fmt(without, key), delta]
                else:
                    row += [f"n/a ({base} not run)", _fmt(without, key), "n/a"]
            compared.append(row)
            top = folds[0].shared_code.get("top_removed") or []
            examples.append(
                f"- {run.protocol}, {model}, fold {folds[0].fold + 1}: "
                + (", ".join(f"`{t['block']}` {_share(t['share'])}" for t in top) or "none")
            )
            for f in folds:
                c = f.shared_code
                removed.append(
                    [
                        run.protocol,
                        model,
                        str(f.fold + 1),
                        f"{100 * c['min_share']:g} %",
                        f"{c['removed_blocks']} / {c['code_blocks_seen']}",
                        _pair(c, "positions_removed"),
                        _pair(c, "instructions_removed"),
                        f"{c['train_files_emptied']} / {c.get('scored_files_emptied', 'n/a')}",
                    ]
                )
    if not compared:
        return []
    return (
        [
            "### Toolchain ablation",
            "",
            "A `-noshared` model is its base model fitted and scored on sequences without the code blocks "
            "that at least the given share of *each* class's training files executes (runtime start-up "
            "and library code both classes share), learned per fold from the training files alone "
            "(`docs/evaluation.md`).",
            "",
        ]
        + _table(
            [
                "protocol",
                "model",
                "ROC-AUC with",
                "without",
                "change",
                "TPR@FPR 1 % with",
                "without",
                "change",
            ],
            compared,
        )
        + [
            "Removed per fold (training files / test files): blocks removed of the distinct code blocks "
            "the training files executed; share of executed positions (blocks and API calls); share of "
            "executed instructions; files left empty (scored with the emptied training files' malicious "
            "share).",
            "",
        ]
        + _table(
            [
                "protocol",
                "model",
                "fold",
                "min. share",
                "blocks removed",
                "positions removed",
                "instructions removed",
                "files emptied",
            ],
            removed,
        )
        + [
            "The removed blocks that took the most executed positions of the training files (share of "
            "those positions), in each model's first fold:",
            "",
            *examples,
            "",
        ]
    )


def _slice_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    lines = ["### Per-slice results", ""]
    for run in runs:
        if run.protocol == LEAKY:
            continue
        for model in results.models(run.dataset, run.protocol):
            slices = [
                s
                for s in results.result(run.dataset, run.protocol, model).slices
                if s.dimension not in LINEAGE_DIMENSIONS or s.dimension == YEAR_DIMENSION
            ]
            if not slices:
                continue
            rows = [
                [
                    s.dimension,
                    s.value,
                    f"{s.counts.n_malicious} / {s.counts.n_benign}",
                    _fmt(s["accuracy"], "accuracy"),
                    _fmt(s["fpr"], "fpr"),
                    _fmt(s["tpr"], "tpr"),
                    _fmt(s["roc_auc"], "roc_auc"),
                ]
                for s in slices
            ]
            lines += [f"{run.protocol}, {model}:", ""]
            lines += _table(
                ["slice", "value", "malicious / benign", "accuracy", "FPR", "TPR", "ROC-AUC"], rows
            )
    return lines if len(lines) > 2 else []


def _top_benign_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    """The held-out benign files each model scored highest: at 1 % FPR the threshold sits among them, so
    one program with several builds in one origin group can decide TPR at that rate."""
    rows = []
    for run in sorted(runs, key=lambda r: (PROTOCOL_ORDER.get(r.protocol, 9), r.protocol)):
        if run.protocol == LEAKY:
            continue
        for model in results.models(run.dataset, run.protocol):
            for rank, f in enumerate(results.result(run.dataset, run.protocol, model).top_benign, 1):
                traits = ", ".join(f.traits[c] for c in TRAIT_COLUMNS if c in f.traits)
                rows.append(
                    [run.protocol, model, str(rank), f"{f.score:.6f}", f.sha256[:12], f.group, traits]
                )
    if not rows:
        return []
    return [
        "### Benign files scored highest",
        "",
        "Out of fold, the held-out benign files each model scored highest. A threshold for a low FPR sits "
        "among them (with n benign files, 1 % FPR lets floor(n / 100) score above it), so they decide TPR "
        "at that rate; several from one origin group point at one program the model mistakes.",
        "",
    ] + _table(["protocol", "model", "rank", "score", "sha256", "origin group", "kind, arch, compiler"], rows)


def _fold_section(runs: list[ProtocolRunInfo], results: EvaluationResults) -> list[str]:
    rows = []
    for run in runs:
        for model in results.models(run.dataset, run.protocol):
            for f in results.result(run.dataset, run.protocol, model).folds:
                rows.append(
                    [
                        run.protocol,
                        model,
                        str(f.fold + 1),
                        f"{f.n_train} / {f.n_test} {run.unit}s",
                        f"{f.threshold:.4g}",
                        f.threshold_source,
                        "n/a" if f.roc_auc is None else f"{f.roc_auc:.3f}",
                        "n/a" if f.fpr is None else f"{100 * f.fpr:.1f} %",
                        f"{f.fit_seconds:.1f}",
                    ]
                )
    return ["### Folds", ""] + _table(
        ["protocol", "model", "fold", "train / test", "threshold", "threshold from", "AUC", "FPR", "fit s"],
        rows,
    )

"""`runtrace corpus build | trace | audit`: the labelled corpus and the shortcut audit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from runtrace.cli.app import INTERRUPTED, app, console, err_console, fail, sub_app
from runtrace.cli.choices import AuditSubset, Label, YesNoAuto
from runtrace.cli.options import TracerRun, tracer_options
from runtrace.cli.progress import LoggedProgress

corpus_app = sub_app("Build the labelled corpus, trace it, and audit it for packaging shortcuts.")
app.add_typer(corpus_app, name="corpus")

MAX_PROBLEMS_SHOWN = 25


def _progress() -> LoggedProgress:
    return LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


class _RichBuildProgress:
    """Adapts the build's progress hooks to one rich bar per stage."""

    def __init__(self, progress: LoggedProgress) -> None:
        self.progress = progress

    def stage(self, name: str, total: int | None):
        task = self.progress.add_task(name, total=total)
        return lambda n=1: self.progress.advance(task, n)

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)


def _corpus_dir(path: Path | None) -> Path:
    from runtrace.corpus.store import default_corpus_dir

    return (path or default_corpus_dir()).expanduser()


def _report_problems(problems) -> None:
    from runtrace.corpus.report import problem_kind

    if not problems:
        return
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        err_console.print(f"[yellow]skipped:[/] {p.where}: {p.reason}", highlight=False, soft_wrap=True)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        err_console.print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more", highlight=False)
    kinds = Counter(problem_kind(p.reason) for p in problems)
    summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    err_console.print(f"{len(problems)} skipped in all: {summary}", highlight=False, soft_wrap=True)


@corpus_app.command("build")
def build(
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Output folder (default: user cache)."),
    sources: Path = typer.Option(None, "--sources", help="Sources file (default: corpus/sources.toml)."),
    malware_zip: Path = typer.Option(
        None, help="Malware zip (members named <sha256>.*); replaces the config's."
    ),
    malware_csv: Path = typer.Option(None, help="The zip's csv (sha256, label, original_name, ...)."),
    password: str = typer.Option(None, help="Zip password for --malware-zip (usually 'infected')."),
    max_per_group: int = typer.Option(None, help="Cap files per origin group (0: no cap) (default: config)."),
    match_caliper: float = typer.Option(0.5, min=0.0, help="Matched subset: largest partner distance (SDs)."),
    no_debian: bool = typer.Option(False, "--no-debian", help="Leave out the Debian packages."),
    no_pypi: bool = typer.Option(False, "--no-pypi", help="Leave out PyPI (current wheels and history)."),
    no_pypi_history: bool = typer.Option(
        False, "--no-pypi-history", help="Leave out PyPI's 2005-2018 installers, eggs and wheels."
    ),
    download_workers: int = typer.Option(4, help="Parallel pip downloads."),
    reuse_build: Path = typer.Option(
        None,
        "--reuse-build",
        help="Also take every file an earlier build read (its corpus folder), without fetching again.",
    ),
) -> None:
    """Assemble the corpus: malware from an archive, benign PE files from Debian and PyPI, one manifest."""
    from runtrace.corpus.build import BuildOptions, build_corpus
    from runtrace.corpus.report import composition_rich, size_rich, summary_rich
    from runtrace.corpus.sources import ArchiveSource, ConfigError, load_sources
    from runtrace.corpus.store import default_downloads_dir

    try:
        config = load_sources(sources)
    except ConfigError as e:
        raise fail(str(e)) from None
    if (malware_zip is None) != (malware_csv is None):
        raise fail("--malware-zip and --malware-csv go together")
    if malware_zip is not None:
        for p in (malware_zip, malware_csv):
            if not p.is_file():
                raise fail(f"{p}: no such file")
        name = malware_zip.stem
        config.archive = [
            ArchiveSource(name=name, zip=str(malware_zip), csv=str(malware_csv), password=password or "")
        ]
    elif password is not None:
        for a in config.archive:
            a.password = password
    if reuse_build is not None and not (reuse_build / "parsed.parquet").is_file():
        raise fail(f"--reuse-build {reuse_build}: no parsed.parquet there (not a corpus build's folder)")
    opts = BuildOptions(
        corpus_dir=_corpus_dir(corpus_dir),
        downloads_dir=default_downloads_dir(),
        sources=config,
        max_per_group=config.build.max_per_group if max_per_group is None else max_per_group,
        max_exes_per_group=config.build.max_exes_per_group,
        max_per_code_group=config.build.max_per_code_group,
        exes_per_group_by_toolchain=dict(config.build.exes_per_group_by_toolchain),
        dlls_per_group_by_toolchain=dict(config.build.dlls_per_group_by_toolchain),
        reuse_build=reuse_build,
        match_caliper=match_caliper,
        download_workers=download_workers,
        use_debian=not no_debian,
        use_pypi=not no_pypi,
        use_pypi_history=not (no_pypi or no_pypi_history),
    )
    try:
        with _progress() as progress:
            result = build_corpus(opts, _RichBuildProgress(progress))
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None
    _report_problems(result.problems)
    if result.code_capped:
        console.print(
            f"code-identity cap {opts.max_per_code_group}: {sum(result.code_capped.values())} files dropped "
            f"from {len(result.code_capped)} code groups shared by more files"
        )
    if result.toolchain_capped:
        dropped = ", ".join(f"{t} {k}s -{n}" for (k, t), n in result.toolchain_capped.most_common())
        console.print(f"per-group caps by toolchain: {dropped}")
    for p in result.undated[:MAX_PROBLEMS_SHOWN]:
        err_console.print(f"[yellow]not dated:[/] {p.where}: {p.reason}", highlight=False, soft_wrap=True)
    if len(result.undated) > MAX_PROBLEMS_SHOWN:
        err_console.print(f"... {len(result.undated)} files not dated in all", highlight=False)
    if result.capped:
        dropped = ", ".join(f"{g} -{n}" for g, n in result.capped.most_common())
        caps = str(opts.max_per_group)
        if opts.max_exes_per_group:
            caps += f", programs {opts.max_exes_per_group}"
        console.print(f"per-group cap {caps}: {sum(result.capped.values())} files dropped ({dropped})")
    console.print(composition_rich(result.rows))
    console.print(summary_rich(result.rows))
    console.print(size_rich(result.rows))
    matched = [r for r in result.rows if r["matched"]]
    partners = sum(r["label"] == "benign" for r in matched)
    console.print(
        f"matched subset: {len(matched)} rows "
        f"({partners} benign partners for {len(matched) - partners} malicious)"
    )
    console.print(f"manifest: {result.manifest_path}\nskipped files: {result.skipped_path}")


def _audit_rich(results):
    from rich.table import Table

    table = Table(title="shortcut audit: metadata-only LightGBM, grouped 5-fold CV by CV group")
    for col in ("subset", "features", "files (mal/ben)", "groups", "accuracy", "FPR", "TPR", "ROC-AUC"):
        table.add_column(col, justify="left" if col in ("subset", "features") else "right")
    for r in results:
        table.add_row(
            r.subset, str(len(r.features)), f"{r.n_files} ({r.n_malicious}/{r.n_benign})", str(r.n_groups),
            f"{r.accuracy:.3f}", f"{r.fpr:.3f}", f"{r.tpr:.3f}",
            f"{r.auc:.3f} [{r.auc_ci[0]:.3f}, {r.auc_ci[1]:.3f}]",
        )  # fmt: skip
    imp = Table(title="feature importance (gain share) / AUC of the feature alone")
    imp.add_column("feature")
    for r in results:
        imp.add_column(f"{r.subset} ({len(r.features)})", justify="right")
    names = list(dict.fromkeys(n for r in results for n in r.importances))
    for n in names:
        cells = []
        for r in results:
            if n in r.importances:
                alone = r.single_feature_auc.get(n)
                cells.append(
                    f"{r.importances[n]:.2f} / {alone:.2f}"
                    if alone is not None
                    else f"{r.importances[n]:.2f}"
                )
            else:
                cells.append("")
        imp.add_row(n, *cells)
    return table, imp


@corpus_app.command("audit")
def audit(
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Corpus folder (default: user cache)."),
    manifest: Path = typer.Option(None, help="A manifest file instead of <corpus-dir>/manifest.parquet."),
    trace_columns: YesNoAuto = typer.Option(YesNoAuto.AUTO, "--trace-columns", help="auto: when traced."),
    subset: AuditSubset = typer.Option(
        AuditSubset.BOTH, help="all, matched (metadata-matched subset) or both."
    ),
    extended: bool = typer.Option(
        False, help="Also audit with entropy, signature, .NET, Rich, exports, timestamp."
    ),
    folds: int = typer.Option(5, min=2, help="Grouped CV folds."),
    seed: int = typer.Option(0, help="Seed for the fold assignment and the trees."),
    write_doc: Path = typer.Option(None, help="Write composition + audit figures into this Markdown file."),
    dataset: Path = typer.Option(
        None, "--dataset", help="Also audit exactly this dataset's files (what the models train on); first."
    ),
    match_preview: bool = typer.Option(
        False, help="Also audit the `dataset build --match` draw over all files, traced or not."
    ),
    figures: Path = typer.Option(None, help="Write class histograms (PNG) into this folder."),
    json_out: Path = typer.Option(
        None, "--json-out", metavar="PATH", help="Also write the figures as JSON here."
    ),
) -> None:
    """Shortcut audit: can metadata alone (no behaviour) tell malicious from benign?"""
    import json
    from dataclasses import asdict

    from runtrace.corpus.audit_sets import audit_all, audit_sets
    from runtrace.corpus.manifest import ManifestError, has_trace_columns, read_manifest
    from runtrace.corpus.report import write_audit_doc
    from runtrace.corpus.store import MANIFEST_NAME

    path = manifest or _corpus_dir(corpus_dir) / MANIFEST_NAME
    try:
        table = read_manifest(path)
    except ManifestError as e:
        raise fail(str(e)) from None
    traced = has_trace_columns(table)
    if trace_columns == "yes" and not traced:
        raise fail(f"{path}: no trace statistics yet (run `runtrace corpus trace`)")
    include_trace = traced if trace_columns == "auto" else trace_columns == "yes"
    try:
        sets = audit_sets(table.to_pylist(), subset, match_preview, dataset)
    except ValueError as e:  # a dataset that cannot be read or does not match the manifest
        raise fail(str(e)) from None
    with err_console.status("grouped cross-validation..."):
        try:
            results = audit_all(sets, include_trace, extended, folds, seed)
        except ValueError as e:
            raise fail(f"{path}: {e}") from None
    for t in _audit_rich(results):
        console.print(t)
    if json_out is not None:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if write_doc is not None:
        write_audit_doc(write_doc, path, results, sets, include_trace, figures)
        console.print(f"figures written into {write_doc}")


@corpus_app.command("lineage")
def lineage(
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Corpus folder (default: user cache)."),
    manifest: Path = typer.Option(None, help="A manifest file instead of <corpus-dir>/manifest.parquet."),
    write_doc: Path = typer.Option(None, help="Write the tables into this Markdown file (and plots beside)."),
    plots: Path = typer.Option(None, help="Folder for the histograms (default: images/ beside --write-doc)."),
) -> None:
    """Families and first-seen dates: tables, and histograms of families and years (matplotlib)."""
    from runtrace.corpus.lineage_report import lineage_markdown, write_lineage_doc, write_plots
    from runtrace.corpus.manifest import ManifestError, read_manifest
    from runtrace.corpus.store import MANIFEST_NAME

    path = manifest or _corpus_dir(corpus_dir) / MANIFEST_NAME
    try:
        rows = read_manifest(path).to_pylist()
    except ManifestError as e:
        raise fail(str(e)) from None
    if not rows or "family" not in rows[0]:
        raise fail(f"{path}: no family column (a manifest older than version 3: run `runtrace corpus build`)")
    text = lineage_markdown(rows)
    console.print(text, highlight=False, markup=False)
    folder = plots or (write_doc.parent / "images" if write_doc is not None else None)
    written = write_plots(rows, folder) if folder is not None else []
    for p in written:
        console.print(f"plot written: {p}", highlight=False)
    if write_doc is not None:
        write_lineage_doc(write_doc, path, text, written)
        console.print(f"figures written into {write_doc}")


@corpus_app.command("trace")
@tracer_options()
def trace(
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Corpus folder (default: user cache)."),
    out: Path = typer.Option(None, "-o", "--out", help="Trace folder (default: <corpus-dir>/traces)."),
    only_matched: bool = typer.Option(False, help="Trace only the metadata-matched subset."),
    match_pool: bool = typer.Option(
        False, help="Trace only the malware and the benign files `dataset build --match` could draw."
    ),
    match_preview: bool = typer.Option(
        False,
        help="Trace only the malware and benign partners of the metadata-only --match draw "
        "(what `corpus audit --match-preview` audits): the smallest set for a matched dataset.",
    ),
    label: Label = typer.Option(None, help="Trace only this class."),
    toolchain: str = typer.Option(
        None, help="Trace only this toolchain: msvc (Visual C++ 6.0-2015), msvc-2017+, rust, mingw-gcc, ..."
    ),
    kind: str = typer.Option(None, help="Trace only this kind of file: exe, dll, driver."),
    limit: int = typer.Option(0, help="Trace at most this many samples, alternating classes (0: all)."),
    retry_errors: bool = typer.Option(False, help="Trace again samples that failed before."),
    tracer: TracerRun = None,
) -> None:
    """Emulate every corpus sample (resumable, parallel) and add trace statistics to the manifest.

    Run again, it skips samples already traced with the same settings; Ctrl-C stops the tracer
    processes and writes what finished into the manifest first."""
    import os
    from typing import get_args

    from runtrace.corpus.manifest import ManifestError
    from runtrace.corpus.sources import TOOLCHAINS
    from runtrace.corpus.store import MANIFEST_NAME
    from runtrace.corpus.tracing import trace_corpus
    from runtrace.trace.emulate.batch import BatchInterrupted
    from runtrace.trace.emulate.dask_runner import DaskUnavailable

    if toolchain is not None and toolchain not in get_args(TOOLCHAINS):
        raise fail(f"--toolchain {toolchain}: not one of {', '.join(get_args(TOOLCHAINS))}")
    root = _corpus_dir(corpus_dir)
    manifest_path = root / MANIFEST_NAME
    out_dir = out or root / "traces"
    progress = LoggedProgress(
        TextColumn("[bold]tracing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"), console=err_console, transient=True,
    )  # fmt: skip
    errors: list = []
    with progress:
        task = progress.add_task("trace", total=None, last="")

        def done(o) -> None:
            if o.status == "error":
                errors.append(o)
            progress.update(task, advance=1, last=(o.name or "")[-40:])

        try:
            outcomes = trace_corpus(
                manifest_path, out_dir, tracer.settings, tracer.workers or os.cpu_count(), on_done=done,
                retry_errors=retry_errors, only_matched=only_matched, label=label, limit=limit,
                on_start=lambda n: progress.update(task, total=n), dask_address=tracer.dask,
                max_bytes=tracer.max_bytes, match_pool=match_pool, match_preview=match_preview,
                toolchain=toolchain, kind=kind,
            )  # fmt: skip
        except (ManifestError, DaskUnavailable) as e:
            raise fail(str(e)) from None
        except BatchInterrupted as stop:
            outcomes = stop.outcomes
            interrupted = stop.unfinished
        else:
            interrupted = None
    for o in errors[:MAX_PROBLEMS_SHOWN]:
        err_console.print(f"[yellow]trace error:[/] {o.name}: {o.error}", highlight=False, soft_wrap=True)
    status = Counter("ok" if o.status in ("ok", "skipped") else "error" for o in outcomes)
    reasons = Counter(o.stop_reason or "-" for o in outcomes if o.status != "error")
    reused = sum(o.status == "skipped" for o in outcomes)
    console.print(
        f"{len(outcomes)} samples: {status['ok']} traced ({reused} reused), "
        f"{status['error']} errors; stop reasons: {dict(reasons.most_common())}"
    )
    console.print(f"traces in {out_dir}; manifest updated: {manifest_path}")
    if interrupted is not None:
        err_console.print(
            f"[yellow]interrupted:[/] {len(outcomes)} samples finished and are in the manifest, "
            f"{interrupted} not; run the same command again to trace the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(INTERRUPTED)


@corpus_app.command("index")
def index(
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the index, e.g. a model's `similar/`."),
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Corpus folder (default: user cache)."),
    manifest: Path = typer.Option(None, help="A manifest file instead of <corpus-dir>/manifest.parquet."),
    measure: bool = typer.Option(
        False, "--measure", help="Then measure family attribution on it (docs/similar.md)."
    ),
) -> None:
    """Index the traced corpus by executed code, for `runtrace similar` and the nearest known programs in
    `scan` (MinHash signatures of each file's executed blocks and API-call n-grams)."""
    from runtrace.corpus.manifest import ManifestError, read_manifest
    from runtrace.corpus.store import MANIFEST_NAME
    from runtrace.similar.build import build_index

    path = manifest or _corpus_dir(corpus_dir) / MANIFEST_NAME
    try:
        rows = read_manifest(path).to_pylist()
    except ManifestError as e:
        raise fail(str(e)) from None
    traced = [r for r in rows if r.get("trace_status") == "ok" and r.get("trace_path")]
    if not traced:
        raise fail(f"{path}: no traced files (run `runtrace corpus trace` first)")
    with _progress() as progress:
        task = progress.add_task("signatures", total=len(traced))
        built, problems = build_index(traced, on_done=lambda: progress.advance(task))
    built.save(out)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        err_console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    console.print(f"indexed {len(built)} of {len(traced)} traced files into {out}")
    if measure:
        from runtrace.similar.build import family_attribution, unseen_families

        a, u = family_attribution(built), unseen_families(built)
        console.print(
            f"family attribution (one file left out; {a['files']:,} files of {a['families']} families with "
            f"another member): top-1 {a['top1']:.1%}, top-5 {a['top5']:.1%}, top-1 per family "
            f"{a['top1_per_family_mean']:.1%}\nunseen families ({u['files']:,} files of {u['families']} "
            f"families, each held out in turn): a neighbour for {u['with_neighbour']:.1%}, of which "
            f"{u['neighbour_malicious']:.1%} malicious",
            highlight=False,
        )

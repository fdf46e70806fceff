"""`runtrace corpus build | trace | audit`: the labelled corpus and the shortcut audit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtrace.cli.app import (
    INTERRUPTED,
    MAX_FILE_SIZE_HELP,
    app,
    console,
    err_console,
    fail,
    max_file_bytes,
)
from runtrace.cli.choices import AuditSubset, Label, YesNoAuto

corpus_app = typer.Typer(
    help="Build the labelled corpus, trace it, and audit it for packaging shortcuts.",
    no_args_is_help=True,
)
app.add_typer(corpus_app, name="corpus")

MAX_PROBLEMS_SHOWN = 25


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


class _RichBuildProgress:
    """Adapts the build's progress hooks to one rich bar per stage."""

    def __init__(self, progress: Progress) -> None:
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
    if not problems:
        return
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        err_console.print(f"[yellow]skipped:[/] {p.where}: {p.reason}", highlight=False, soft_wrap=True)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        err_console.print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more", highlight=False)
    kinds = Counter(_problem_kind(p.reason) for p in problems)
    summary = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    err_console.print(f"{len(problems)} skipped in all: {summary}", highlight=False, soft_wrap=True)


def _problem_kind(reason: str) -> str:
    for needle, kind in [
        ("pip download", "download failures"),
        ("apt-get", "download failures"),
        ("unsupported architecture", "non-x86 architecture"),
        ("neither class", "unlabelled (grayware etc.)"),
        ("labelled", "label conflicts"),
        ("not PE", "not PE"),
        ("no MZ", "not PE"),
        ("PE header", "not PE"),
    ]:
        if needle in reason:
            return kind
    return "other"


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
    no_pypi: bool = typer.Option(False, "--no-pypi", help="Leave out the PyPI wheels."),
    download_workers: int = typer.Option(4, help="Parallel pip downloads."),
) -> None:
    """Assemble the corpus: malware from an archive, benign PE files from Debian and PyPI, one manifest."""
    from runtrace.corpus.build import BuildOptions, build_corpus
    from runtrace.corpus.report import composition_rich, summary_rich
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
    opts = BuildOptions(
        corpus_dir=_corpus_dir(corpus_dir),
        downloads_dir=default_downloads_dir(),
        sources=config,
        max_per_group=config.build.max_per_group if max_per_group is None else max_per_group,
        match_caliper=match_caliper,
        download_workers=download_workers,
        use_debian=not no_debian,
        use_pypi=not no_pypi,
    )
    try:
        with _progress() as progress:
            result = build_corpus(opts, _RichBuildProgress(progress))
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None
    _report_problems(result.problems)
    if result.capped:
        dropped = ", ".join(f"{g} -{n}" for g, n in result.capped.most_common())
        console.print(
            f"per-group cap {opts.max_per_group}: {sum(result.capped.values())} files dropped ({dropped})"
        )
    console.print(composition_rich(result.rows))
    console.print(summary_rich(result.rows))
    matched = [r for r in result.rows if r["matched"]]
    partners = sum(r["label"] == "benign" for r in matched)
    console.print(
        f"matched subset: {len(matched)} rows "
        f"({partners} benign partners for {len(matched) - partners} malicious)"
    )
    console.print(f"manifest: {result.manifest_path}\nskipped files: {result.skipped_path}")


DOC_BEGIN = "<!-- corpus-figures:begin (written by `runtrace corpus audit --write-doc`) -->"
DOC_END = "<!-- corpus-figures:end -->"


def _audit_rich(results):
    from rich.table import Table

    table = Table(title="shortcut audit: metadata-only LightGBM, grouped 5-fold CV by origin group")
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


def _write_doc(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    section = f"{DOC_BEGIN}\n{block}\n{DOC_END}"
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        tail = rest.split(DOC_END, 1)[1]
        text = head + section + tail
    else:
        text = (text.rstrip() + "\n\n" if text else "") + section + "\n"
    path.write_text(text, encoding="utf-8")


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
    json_out: Path = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Shortcut audit: can metadata alone (no behaviour) tell malicious from benign?"""
    import json
    from dataclasses import asdict
    from datetime import date

    from runtrace.corpus.audit import audit_markdown, run_audit
    from runtrace.corpus.manifest import ManifestError, has_trace_columns, read_manifest
    from runtrace.corpus.report import composition_markdown, packages_markdown, summary_markdown
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
    rows = table.to_pylist()
    subsets = {"all": rows, "matched": [r for r in rows if r.get("matched")]}
    wanted = ["all", "matched"] if subset == "both" else [subset]
    results = []
    with err_console.status("grouped cross-validation..."):
        for name in wanted:
            variants = [False, True] if extended else [False]
            for ext in variants:
                try:
                    results.append(run_audit(subsets[name], include_trace, ext, folds, seed, subset=name))
                except ValueError as e:
                    raise fail(f"{path}: {name} subset: {e}") from None
    for t in _audit_rich(results):
        console.print(t)
    if json_out is not None:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if write_doc is not None:
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        block = "\n\n".join([
            f"Figures written by `runtrace corpus audit` on {date.today().isoformat()} from `{path}` "
            f"(manifest sha256 `{digest[:16]}...`), trace columns: {'yes' if include_trace else 'no'}.",
            "### Per class", summary_markdown(rows),
            "### Class x arch x kind x compiler", composition_markdown(rows),
            "### Files per package", packages_markdown(rows),
            "### Shortcut audit", audit_markdown(results),
        ])  # fmt: skip
        _write_doc(write_doc, block)
        console.print(f"figures written into {write_doc}")


@corpus_app.command("trace")
def trace(
    corpus_dir: Path = typer.Option(None, "--corpus-dir", help="Corpus folder (default: user cache)."),
    out: Path = typer.Option(None, "-o", "--out", help="Trace folder (default: <corpus-dir>/traces)."),
    max_instructions: int = typer.Option(1_000_000, help="Stop a sample after this many instructions."),
    timeout: float = typer.Option(60.0, help="Wall-clock seconds per sample."),
    memory_mb: int = typer.Option(1024, help="Memory cap per tracer process (MiB)."),
    workers: int = typer.Option(0, help="Parallel tracer processes (0: one per CPU)."),
    only_matched: bool = typer.Option(False, help="Trace only the metadata-matched subset."),
    label: Label = typer.Option(None, help="Trace only this class."),
    limit: int = typer.Option(0, help="Trace at most this many samples, alternating classes (0: all)."),
    retry_errors: bool = typer.Option(False, help="Trace again samples that failed before."),
    dask: str = typer.Option(
        None,
        "--dask",
        metavar="ADDRESS",
        help="Trace on this Dask scheduler (tcp://host:8786) instead of locally.",
    ),
    max_file_size: int = typer.Option(256, "--max-file-size", help=MAX_FILE_SIZE_HELP),
) -> None:
    """Emulate every corpus sample (resumable, parallel) and add trace statistics to the manifest.

    Run again, it skips samples already traced with the same settings; Ctrl-C stops the tracer
    processes and writes what finished into the manifest first."""
    import os

    from runtrace.corpus.manifest import ManifestError
    from runtrace.corpus.store import MANIFEST_NAME
    from runtrace.corpus.tracing import trace_corpus
    from runtrace.trace.emulate.batch import BatchInterrupted
    from runtrace.trace.emulate.dask_runner import DaskUnavailable
    from runtrace.trace.emulate.emulator import TracerSettings

    root = _corpus_dir(corpus_dir)
    manifest_path = root / MANIFEST_NAME
    out_dir = out or root / "traces"
    settings = TracerSettings(max_instructions=max_instructions, timeout_s=timeout, memory_mb=memory_mb)
    max_bytes = max_file_bytes(max_file_size)
    progress = Progress(
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
                manifest_path, out_dir, settings, workers or os.cpu_count(), on_done=done,
                retry_errors=retry_errors, only_matched=only_matched, label=label, limit=limit,
                on_start=lambda n: progress.update(task, total=n), dask_address=dask,
                max_bytes=max_bytes,
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

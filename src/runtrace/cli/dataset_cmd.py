"""`runtrace dataset build | info`: labelled traces -> ISM / BSM token datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from runtrace.cli.app import INTERRUPTED, app, console, err_console, fail, sub_app
from runtrace.cli.choices import Normalisation, Representation, Windowing
from runtrace.cli.progress import LoggedProgress

dataset_app = sub_app("Turn traces into ISM / BSM token datasets.")
app.add_typer(dataset_app, name="dataset")


def _read_manifest(path: Path):
    """The corpus manifest as a pyarrow table."""
    from runtrace.corpus.manifest import ManifestError, read_manifest

    try:
        return read_manifest(path)
    except ManifestError as e:
        raise fail(str(e)) from None


@dataset_app.command("build")
def build(
    representation: Representation = typer.Option(..., "--representation", "-r"),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Corpus manifest (Parquet) with labels."),
    traces: Path = typer.Option(
        None,
        "--traces",
        "-t",
        help="Directory of <sha256>.rtrace files (default: the manifest's trace_path).",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Dataset directory to write."),
    normalisation: Normalisation = typer.Option(Normalisation.REGISTERS, help="Instruction normalisation."),
    api: bool = typer.Option(
        True, "--api/--no-api", help="API calls as tokens (--no-api: the paper's setting)."
    ),
    api_args: bool = typer.Option(
        False,
        "--api-args/--no-api-args",
        help="Follow each API token with its arguments' classes (file locations, registry keys, hosts, "
        "memory protection, ...); off in the paper's ISM and BSM.",
    ),
    max_tokens: int = typer.Option(
        None, help="Keep only the first N tokens (ISM) or blocks (BSM) per trace."
    ),
    windowing: Windowing = typer.Option(None, help="Default windows for models."),
    window: int = typer.Option(None, help="Default window length (tokens or blocks)."),
    stride: int = typer.Option(None, help="Default stride of sliding windows (default: the window length)."),
    windows_per_file: int = typer.Option(None, help="Default number of sampled windows per file."),
    jobs: int = typer.Option(1, help="Worker processes encoding traces."),
    min_instructions: int = typer.Option(
        0, help="Leave out traces with fewer executed instructions (so trace length is not the label)."
    ),
    limit: int = typer.Option(None, help="Use only the first N labelled traces (quick experiments)."),
    match: bool = typer.Option(
        False, help="Draw benign files matching the malware's arch, kind, toolchain, linker era, size."
    ),
    match_ratio: int = typer.Option(1, min=1, help="With --match: benign partners per malicious file."),
    overwrite: bool = typer.Option(False, help="Build again even when OUT is up to date."),
    show_progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Encode a corpus's traces as an ISM or BSM dataset (token ids, Parquet file table).

    Run again with the same traces and settings, it finds OUT up to date and does nothing."""
    from runtrace.represent.dataset import DatasetError, build_dataset
    from runtrace.represent.labelled import ManifestColumnsError, built_from, labelled_traces
    from runtrace.represent.windows import WindowConfig

    if traces is not None and not traces.is_dir():
        raise fail(f"{traces}: no such directory")
    if api_args and not api:
        raise fail(
            "--api-args follows API tokens with their arguments' classes: it needs API tokens (not --no-api)"
        )
    window_settings = {
        k: v
        for k, v in {"mode": windowing, "length": window, "stride": stride, "count": windows_per_file}.items()
        if v is not None
    }
    if window_settings:
        try:
            WindowConfig.from_json(window_settings)
        except (TypeError, ValueError) as e:
            raise fail(f"window settings: {e}") from None

    table = _read_manifest(manifest)
    match_info = None
    if match:
        from runtrace.corpus.matching import matched_manifest

        try:
            matched = matched_manifest(table, min_instructions, match_ratio)
        except ValueError as e:
            raise fail(str(e)) from None
        table, match_info = matched.table, matched.info
        console.print(
            f"--match: {matched.malicious} malicious files with {matched.benign} benign partners; "
            f"{matched.unmatched} malicious files have no look-alike and are left out",
            highlight=False,
            soft_wrap=True,
        )
    try:
        chosen = labelled_traces(table, traces).head(limit)
    except ManifestColumnsError as e:
        raise fail(str(e)) from None
    if not chosen.paths:
        raise fail(f"no labelled traces found ({', '.join(f'{k}: {v}' for k, v in chosen.skipped.items())})")

    inputs_key = chosen.inputs_key(
        representation=representation, normalisation=normalisation, api=api, max_tokens=max_tokens,
        window=window_settings, min_instructions=min_instructions, match=match_info,
        # Named only when on, so that datasets built before the option keep their key (stay up to date).
        **({"api_args": True} if api_args else {}),
    )  # fmt: skip
    if not overwrite and built_from(out) == inputs_key:
        console.print(f"{out} is up to date (same traces and settings; --overwrite builds it again)")
        return

    with LoggedProgress(
        TextColumn("[bold]encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("encode", total=len(chosen.paths))
        try:
            data = build_dataset(
                chosen.paths,
                chosen.labels,
                representation=representation,
                normalisation=normalisation,
                api=api,
                api_args=api_args,
                groups=chosen.groups,
                kinds=chosen.kinds,
                max_tokens=max_tokens,
                jobs=jobs,
                on_error="skip",
                window=window_settings or None,
                progress=lambda done, total: progress.update(task, completed=done),
                min_instructions=min_instructions,
                out=out,
                meta={"inputs_key": inputs_key, **({"match": match_info} if match_info is not None else {})},
            )
        except DatasetError as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(f"{e.filename or out}: {e.strerror or e}") from None
        except KeyboardInterrupt:
            raise fail(
                f"interrupted while encoding; {out} was not written (an earlier dataset there is kept)",
                INTERRUPTED,
            ) from None
    for item in data.meta.get("skipped", [])[:20]:
        err_console.print(
            f"[yellow]skipped:[/] {item['trace']}: {item['error']}", highlight=False, soft_wrap=True
        )
    summary = data.describe()
    summary["skipped"] = {
        **chosen.skipped,
        "unreadable": len(data.meta.get("skipped", [])),
        f"under {min_instructions} instructions": len(data.meta.get("short", [])),
    }
    console.print_json(json.dumps(summary))
    console.print(f"dataset written to {out}", highlight=False)


@dataset_app.command("info")
def info(path: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Summarise a dataset: files per class, lexicon size, sequence lengths."""
    from runtrace.represent.dataset import DatasetError, SequenceDataset

    try:
        data = SequenceDataset.load(path)
    except DatasetError as e:
        raise fail(str(e)) from None
    console.print_json(json.dumps({**data.describe(), "window_defaults": data.window_defaults}))

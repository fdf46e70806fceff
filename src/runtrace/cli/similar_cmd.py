"""`runtrace similar`: which known programs does this one behave like?

The inputs are read as `runtrace scan` reads them (PE files traced in child processes, trace files,
directories, zip archives); each trace is compared with the similarity index (by default the one shipped
with the bundled model) and the k known files that executed the most alike code are listed.  No model
is loaded, and neither torch nor datasketch is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from runtrace.cli.app import INTERRUPTED, app, console, fail
from runtrace.cli.options import TracerRun, tracer_options


@app.command()
@tracer_options()
def similar(
    paths: list[Path] = typer.Argument(
        None, help="PE files, directories, zip archives, or trace files (.rtrace, x64dbg, text logs)."
    ),
    index: Path = typer.Option(
        None, "--index", help="Similarity index folder (default: the one shipped with the bundled model)."
    ),
    k: int = typer.Option(5, "-k", min=1, help="Known files listed per input, most alike first."),
    password: str = typer.Option(None, help="Zip password (malware archives usually use 'infected')."),
    json_output: bool = typer.Option(False, "--json", help="Print the result document as JSON."),
    schema: bool = typer.Option(
        False, "--schema", help="Print the JSON Schema of the --json output and exit."
    ),
    tracer: TracerRun = None,
) -> None:
    """The known programs whose executed code is most like each input's (MinHash of executed blocks).

    Exit status: 0 when every input was answered (with or without neighbours), 2 when any input
    failed or the index cannot be used, 130 when stopped by Ctrl-C.
    """
    if schema:
        import json

        from runtrace.scan.schema import SimilarReport

        sys.stdout.write(json.dumps(SimilarReport.model_json_schema(), indent=1) + "\n")
        return
    if not paths:
        raise fail("give at least one PATH (a PE file, directory, zip archive or trace file)")

    from runtrace.cli.scan_cmd import finish, run_with_progress
    from runtrace.scan.inputs import iter_inputs
    from runtrace.scan.neighbours import NeighbourFinder, default_index_dir, load_index
    from runtrace.scan.runner import RunOptions
    from runtrace.similar.index import IndexFileError

    try:
        known = load_index(index or default_index_dir())
    except IndexFileError as e:
        raise fail(str(e)) from None
    options = RunOptions(workers=tracer.workers, tracer=tracer.settings, dask=tracer.dask)
    finder = NeighbourFinder(known, k, options)
    try:
        inputs = list(iter_inputs(paths, password, tracer.max_bytes))
    except KeyboardInterrupt:
        raise fail("interrupted while listing the inputs; nothing was read", INTERRUPTED) from None
    try:
        report = run_with_progress(finder, inputs, "comparing")
    except OSError as e:  # no room for the temporary traces, no Dask scheduler
        raise fail(f"cannot trace: {e.strerror or e}") from None
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=1) + "\n")
    else:
        from runtrace.scan.render import render_similar

        render_similar(report, console)
    finish(report, "answered")

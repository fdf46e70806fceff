"""`runtrace serve`: the scanning service (FastAPI under uvicorn) with its web page."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail, one_blas_thread, start_up
from runtrace.cli.options import TracerRun, tracer_options

TOKEN_VARIABLE = "RUNTRACE_TOKEN"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def default_state_dir() -> Path:
    from runtrace.paths import cache_root

    return cache_root() / "serve"


@app.command()
@tracer_options(workers=False, max_file_size=False)
def serve(
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on (anything but localhost needs a token)."
    ),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, help="Scans running at once (each traces in its own child process)."),
    db: Path = typer.Option(
        None,
        help="SQLite database of scans (default: ~/.cache/runtrace/serve/scans.db); samples and traces are "
        "kept in 'samples' and 'traces' folders beside it.",
    ),
    model: Path = typer.Option(None, "--model", "-m", help="Model directory (default: the bundled model)."),
    token: str = typer.Option(
        None, help=f"API token clients must send (default: ${TOKEN_VARIABLE}); required off localhost."
    ),
    max_upload_mb: int = typer.Option(64, help="Largest upload accepted (MiB); larger ones get 413."),
    access_log: str = typer.Option(
        None,
        "--access-log",
        metavar="PATH",
        help="Where to log each request, one line each (default: access.log beside the database; '-': "
        "standard error).",
    ),
    tracer: TracerRun = None,
) -> None:
    """Run the scanning service: an HTTP API (/api/v1, docs at /docs) and a web page at /."""
    one_blas_thread()  # the service scores in this process, as `runtrace scan` does
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    if host not in _LOCAL_HOSTS and not token:
        raise fail(f"listening on {host} needs an API token: pass --token or set ${TOKEN_VARIABLE}")
    if workers < 1 or max_upload_mb < 1:
        raise fail("--workers and --max-upload-mb must be at least 1")
    db = db or default_state_dir() / "scans.db"

    # Imports, the model and the app made with the collector paused and then frozen, as `runtrace scan`'s
    # start-up is: every tracer child is forked from this process, and its collections would otherwise
    # walk (and so copy) the parent's long-lived objects, as the server's own would keep walking them.
    with start_up():
        import uvicorn

        from runtrace.scan.scanner import ScannerError
        from runtrace.serve.app import access_logger, create_app
        from runtrace.serve.jobs import ScanService, ScanSettings
        from runtrace.serve.store import JobStore, SampleStore

        settings = ScanSettings(model, tracer.settings, dask=tracer.dask)
        try:
            jobs = JobStore(db)
            service = ScanService(settings, jobs, SampleStore(db.parent / "samples"), workers)
            log = None if access_log == "-" else Path(access_log) if access_log else db.parent / "access.log"
            access_logger(log)
        except ScannerError as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(f"{e.filename or db}: {e.strerror or e}") from None
        except Exception as e:  # sqlite3.DatabaseError: not a database, or a locked one
            raise fail(f"{db}: {e}") from None
        web = create_app(service, token, max_upload_mb * 1024 * 1024)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"runtrace serve on http://{shown}:{port}/ (API docs at /docs); scans in {db}; "
        f"requests logged to {log or 'standard error'}",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")

"""`runtrace` command line: a thin layer over the stage packages.

Each command lives in its own module and registers itself on `app`; importing the module is enough.
"""

from __future__ import annotations

import os
import sys

# pydantic looks for plugins by reading the metadata of every installed distribution the first time a
# model is built (about 10 ms of CPU of a one-second `runtrace scan`, measured); runtrace uses none.  A
# value the user set wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import runtrace.cli.calibrate_cmd  # noqa: F401  (registers commands)
import runtrace.cli.convert_cmd  # noqa: F401  (registers commands)
import runtrace.cli.corpus_cmd  # noqa: F401  (registers commands)
import runtrace.cli.dataset_cmd  # noqa: F401  (registers commands)
import runtrace.cli.demo_cmd  # noqa: F401  (registers commands)
import runtrace.cli.evaluate_cmd  # noqa: F401  (registers commands)
import runtrace.cli.export_cmd  # noqa: F401  (registers commands)
import runtrace.cli.results_cmd  # noqa: F401  (registers commands)
import runtrace.cli.scan_cmd  # noqa: F401  (registers commands)
import runtrace.cli.serve_cmd  # noqa: F401  (registers commands)
import runtrace.cli.similar_cmd  # noqa: F401  (registers commands)
import runtrace.cli.train_cmd  # noqa: F401  (registers commands)
from runtrace.cli import trace_cmd  # noqa: F401  (registers commands)
from runtrace.cli.app import UserError, app, fail


def main() -> None:
    try:
        app()  # typer's standalone mode ends with SystemExit, always
    except SystemExit as e:
        code = e.code
    except UserError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)
    else:
        code = 0
    _exit_without_teardown(code)


def _exit_without_teardown(code: int | str | None) -> None:
    """Flush the output and leave at once, skipping the interpreter's teardown of every module and
    object, which is about 0.1 s of a `runtrace scan` that answers in about one (measured).  Only a
    command that finished gets here: by then its work is written, its files closed and its child
    processes joined."""
    if code is not None and not isinstance(code, int):  # sys.exit("message"): print it, status 1
        sys.stderr.write(f"{code}\n")
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # the reader went away, or a stream is closed
        pass
    os._exit(code or 0)

"""`runtrace` command line: a thin layer over the stage packages.

Each command lives in its own module and registers itself on `app`; importing the module is enough.
"""

from __future__ import annotations

import sys

import runtrace.cli.calibrate_cmd  # noqa: F401  (registers commands)
import runtrace.cli.convert_cmd  # noqa: F401  (registers commands)
import runtrace.cli.corpus_cmd  # noqa: F401  (registers commands)
import runtrace.cli.dataset_cmd  # noqa: F401  (registers commands)
import runtrace.cli.demo_cmd  # noqa: F401  (registers commands)
import runtrace.cli.evaluate_cmd  # noqa: F401  (registers commands)
import runtrace.cli.scan_cmd  # noqa: F401  (registers commands)
import runtrace.cli.train_cmd  # noqa: F401  (registers commands)
from runtrace.cli import trace_cmd  # noqa: F401  (registers commands)
from runtrace.cli.app import UserError, app, fail


def main() -> None:
    try:
        app()
    except UserError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        sys.exit(130)

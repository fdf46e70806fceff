"""`runtrace` command line: a thin layer over the stage packages.

Each command lives in its own module and registers itself on `app` when imported; `app` imports the
modules when it is first built (`runtrace.cli.app.RuntraceTyper`), and `main` only the one it runs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import types

# pydantic looks for plugins by reading the metadata of every installed distribution the first time a
# model is built (about 10 ms of CPU of a one-second `runtrace scan`, measured); runtrace uses none.  A
# value the user set wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from runtrace.cli.app import app, fail, running_as_own_process  # noqa: E402  (after the environment above)
from runtrace.errors import SetupError  # noqa: E402


def main() -> None:
    from typer.main import get_group

    running_as_own_process()  # this process ends with the command (see app.start_up)
    # Only the module of the command named, when it names one (a typo or `--help` loads them all), and
    # what typer imports to parse its options: long-lived objects all, made with the collector paused
    # and frozen, as a command's own start-up is (`app.start_up`; measured with gc.callbacks, the
    # collections here were about 4 ms of CPU of a one-file scan).
    gc.disable()
    try:
        if app.load_only(sys.argv[1] if len(sys.argv) > 1 else ""):
            _import_option_parsing()
    finally:
        gc.freeze()
        gc.enable()
    try:
        # The group, as `app()` builds it with every command registered; `get_group` keeps it a group
        # when only one command is (typer would otherwise make that command the whole program).
        get_group(app)()  # standalone mode ends with SystemExit, always
    except SystemExit as e:
        code = e.code
    except SetupError as e:  # raised below a command's own handling: shown here, as one line
        code = fail(str(e)).exit_code
    except KeyboardInterrupt:
        sys.exit(130)
    else:
        code = 0
    _exit_without_teardown(code)


def _import_option_parsing() -> None:
    """typer 0.29 imports its option adapters, and pydantic with them, when a command's options are first
    parsed: here instead, while the collector is paused; and pydantic's plugin loader."""
    with contextlib.suppress(ImportError):  # a typer that parses options otherwise
        import typer._adapters  # noqa: F401
    _import_pydantic_plugin_loader()


def _import_pydantic_plugin_loader() -> None:
    """pydantic's plugin loader, imported with a stand-in for `importlib.metadata`, whose `entry_points`
    imports the real module when first called.  The loader imports importlib.metadata (and with it the
    email package, to parse distributions' metadata: about 8 ms of CPU) only to look for plugins, which
    are turned off above unless the user says otherwise; a later `import importlib.metadata` gets the
    real module."""
    if "pydantic.plugin._loader" in sys.modules or "importlib.metadata" in sys.modules:
        return

    def entry_points(*args, **kwargs):
        from importlib import metadata  # the real one: the stand-in has left sys.modules by now

        return metadata.entry_points(*args, **kwargs)

    standin = types.ModuleType("importlib.metadata")
    standin.entry_points = entry_points
    try:
        import pydantic.plugin  # noqa: F401  (its own imports, without the stand-in)

        sys.modules["importlib.metadata"] = standin
        import pydantic.plugin._loader  # noqa: F401
    except ImportError:  # a pydantic without it: nothing to import early
        pass
    finally:
        if sys.modules.get("importlib.metadata") is standin:
            del sys.modules["importlib.metadata"]


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

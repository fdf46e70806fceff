"""What a `runtrace` process imports: the command it runs and not the others' dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import FIXTURES, ROOT
from runtrace.cli.app import COMMANDS, app


def test_the_command_table_names_the_module_of_every_command() -> None:
    """`main` imports only the module COMMANDS names for the command given: every command and command
    group is in the table, with the module that registers it."""
    registered = {(c.name or c.callback.__name__).replace("_", "-"): c.callback.__module__
                  for c in app.registered_commands}  # fmt: skip
    registered |= {g.name: g.typer_instance.registered_commands[0].callback.__module__
                   for g in app.registered_groups}  # fmt: skip
    assert registered == {name: f"runtrace.cli.{module}" for name, module in COMMANDS.items()}


def _run(*args: str) -> subprocess.CompletedProcess:
    """The command line in a fresh interpreter; on stderr, after its own output, the modules it had
    imported when it ended and how many objects it had frozen (one JSON line)."""
    code = (
        "import gc, json, sys\n"
        "import runtrace.cli as cli\n"
        "leave = cli._exit_without_teardown\n"
        "def report(code):\n"
        "    state = {'modules': sorted(sys.modules), 'frozen': gc.get_freeze_count()}\n"
        "    sys.stderr.write('\\n' + json.dumps(state) + '\\n')\n"
        "    leave(code)\n"
        "cli._exit_without_teardown = report\n"
        "cli.main()\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)  # fmt: skip


def test_a_scan_imports_neither_the_other_commands_nor_rich() -> None:
    """`runtrace scan --json` of a PE file with the default model (explanation and neighbours on) imports
    its own command's module only, no rich (nothing is printed but JSON), no numpy.ma, no torch."""
    done = _run("scan", "--json", "--workers", "1", str(FIXTURES / "benign" / "cli-32.exe"))
    *output, state = done.stderr.rstrip("\n").split("\n")
    result = json.loads(done.stdout)["results"][0]
    assert result["status"] == "ok" and result["explanation"] and result["neighbours"], done.stderr
    state = json.loads(state)
    assert state["frozen"] > 10_000  # start-up's objects, out of the collector's way (app.start_up)
    loaded = set(state["modules"])
    other_commands = {f"runtrace.cli.{m}" for m in COMMANDS.values()} - {"runtrace.cli.scan_cmd"}
    assert not loaded & other_commands, loaded & other_commands
    assert not {m for m in loaded if m == "rich" or m.startswith("rich.")}
    assert not {"numpy.ma", "torch", "datasketch", "scipy", "pyarrow", "sklearn"} & loaded
    # Nor importlib.metadata (pydantic's plugin loader and the decoy cache's key get by without it), nor
    # multiprocessing (the tracer child is forked, its result comes back through a plain pipe).
    assert not {"importlib.metadata", "email.message", "Crypto.Cipher.ARC4", "multiprocessing"} & loaded
    assert {"runtrace.cli.scan_cmd", "onnxruntime"} <= loaded


def test_help_lists_every_command() -> None:
    """With no command named, `main` registers them all (help, a typo's suggestions)."""
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    shown = done.stdout.split("Commands")[-1]
    assert all(name in shown for name in COMMANDS), shown


def test_start_up_pauses_the_collector_and_freezes_nothing_of_a_callers_process() -> None:
    import gc

    from runtrace.cli.app import start_up

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with start_up():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_pydantic_plugins_still_load_when_the_user_turns_them_on() -> None:
    """The plugin loader is imported with a stand-in for importlib.metadata (see
    `cli._import_pydantic_plugin_loader`): with plugins on, asking for them imports the real module and
    reads the entry points."""
    code = (
        "import sys\n"
        "import runtrace.cli as cli\n"
        "cli._import_pydantic_plugin_loader()\n"
        "assert 'importlib.metadata' not in sys.modules\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "assert list(get_plugins()) == []  # none installed; the entry points were read\n"
        "assert 'importlib.metadata' in sys.modules  # the real one, imported by the stand-in's call\n"
        "import importlib.metadata\n"
        "assert hasattr(importlib.metadata, 'version') and 'importlib.metadata' in sys.modules\n"
    )
    env = dict(os.environ, PYDANTIC_DISABLE_PLUGINS="x")  # plugins on, but one named "x"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr

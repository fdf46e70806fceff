"""What every command shares: one set of tracer options and defaults, flags shown as flags, help that
names documents that exist, errors that name options that exist, exit statuses, tables at 80 columns."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.trace.settings import DEFAULTS, TracerSettings
from scan_support import encrypted_zip, write_traces

ROOT = Path(__file__).resolve().parents[1]
TRACING = (["trace"], ["scan"], ["similar"], ["corpus", "trace"], ["serve"])


def commands() -> dict:
    """Every command and group of `runtrace`, by its path ('corpus trace')."""
    from typer.core import TyperGroup

    root = typer.main.get_command(app)
    out = {}

    def walk(group: TyperGroup, prefix: str) -> None:
        ctx = typer.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            out[f"{prefix}{name}"] = command
            if isinstance(command, TyperGroup):
                walk(command, f"{prefix}{name} ")

    walk(root, "")
    return out


def run(*args: str):
    return CliRunner().invoke(app, list(args))


# --- one definition of the tracer's limits ------------------------------------------------------------


@pytest.mark.parametrize("path", TRACING, ids=" ".join)
def test_every_tracing_command_takes_the_tracers_own_defaults(path) -> None:
    params = {p.name: p for p in commands()[" ".join(path)].params}
    assert params["max_instructions"].default == DEFAULTS.max_instructions == 10_000_000
    assert params["timeout"].default == DEFAULTS.timeout_s == 60.0
    assert params["memory_mb"].default == DEFAULTS.memory_mb == 1024
    assert params["dask"].default is None and params["dask"].metavar == "ADDRESS"


def test_the_limits_are_written_once() -> None:
    """No module but runtrace.trace.settings spells the defaults out (the emulator, the scanner, the
    service and four commands each had their own copy)."""
    literals = re.compile(
        r"\b(max_instructions|memory_mb)\s*(:\s*[\w |]+)?=\s*[\d_]+\b|\btimeout_s\s*(:\s*[\w |]+)?=\s*60\b"
        r"|typer\.Option\(\s*(10_000_000|1_000_000|60\.0|1024)\b"
    )
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "src" / "runtrace").rglob("*.py"))
        if path.name != "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literals.search(line)
    ]
    assert found == []
    from runtrace.scan.scanner import ScanOptions
    from runtrace.serve.jobs import ScanSettings
    from runtrace.trace.emulate.emulator import TracerSettings as EmulatorSettings

    assert EmulatorSettings is TracerSettings
    assert ScanOptions().tracer == ScanSettings().tracer == TracerSettings()


def test_tracer_options_reach_the_command_checked(tmp_path: Path, cli32: Path) -> None:
    result = run("trace", str(cli32), "-o", str(tmp_path), "--timeout", "-1")
    assert result.exit_code == 2 and result.stderr.strip() == "error: --timeout must be 0 or more, not -1.0"
    result = run("trace", str(cli32), "-o", str(tmp_path), "--max-instructions", "2000", "--workers", "1")
    assert result.exit_code == 0, result.output
    from runtrace.trace.formats.native import read_trace_meta

    meta = read_trace_meta(next(tmp_path.glob("*.rtrace")))
    assert meta.settings["max_instructions"] == 2000 and meta.settings["timeout_s"] == DEFAULTS.timeout_s


# --- help ----------------------------------------------------------------------------------------------


def test_flags_are_shown_as_flags() -> None:
    """typer writes `--json <bool>`, which reads as if the flag took a value."""
    for path in ("", "scan", "trace", "show", "corpus audit", "evaluate", "serve"):
        result = CliRunner().invoke(app, [*path.split(), "--help"], terminal_width=120)
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, path
    help_text = CliRunner().invoke(app, ["scan", "--help"], terminal_width=120).output
    assert re.search(r"--json\s+Print the result document", help_text)


def test_a_flag_given_a_value_is_an_error_not_a_path(tmp_path: Path) -> None:
    result = run("scan", "--json", "true", str(tmp_path / "x.exe"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --json is a flag and takes no value: write --json alone, not --json true "
        "(see runtrace scan --help)"
    )
    result = run("corpus", "trace", "--retry-errors", "yes")
    assert result.exit_code == 2 and "--retry-errors is a flag" in result.stderr


def test_every_document_a_help_text_names_exists() -> None:
    named = set()
    for command in commands().values():
        texts = [command.help or ""] + [getattr(p, "help", "") or "" for p in command.params]
        for text in texts:
            named |= set(re.findall(r"docs/[\w.-]+\.md", text))
    assert "docs/evaluation.md" in named  # `evaluate --help` names the protocol's page
    assert [doc for doc in sorted(named) if not (ROOT / doc).is_file()] == []


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    text = CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=200).output
    assert "per-file metrics with bootstrap intervals" in text


# --- errors --------------------------------------------------------------------------------------------


def option_names(path: str) -> set[str]:
    return {name for p in commands()[path].params for name in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["show", "{bin}"], "show"),
        (["convert", "{bin}", "{out}"], "convert"),
        (["show", "{bin}", "--from", "pdf"], "show"),
        (["convert", "{bin}", "{out}", "--to", "pdf"], "convert"),
        (["scan", "--threshold", "2", "{bin}"], "scan"),
        (["trace", "{bin}", "-o", "{out}", "--max-file-size", "-1"], "trace"),
    ],
)
def test_errors_name_only_options_that_exist(tmp_path: Path, args: list[str], path: str) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(bytes(range(256)) * 4)
    args = [a.format(bin=sample, out=tmp_path / "out.txt") for a in args]
    result = run(*args)
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", result.stderr))
    assert named and named <= option_names(path), (result.stderr, named - option_names(path))


def test_show_of_an_unknown_file_says_to_name_its_format_with_from(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(bytes(range(256)) * 4)
    result = run("show", str(sample))
    assert result.stderr.strip().endswith("; name its format with --from")
    assert "--from" in option_names("show")


# --- show --limit --------------------------------------------------------------------------------------


def test_show_limit_counts_instructions_or_blocks_as_the_help_says(tmp_path: Path) -> None:
    trace = write_traces(tmp_path, {"t": (True, 5, {})})["t"]
    lines = run("show", str(trace), "--limit", "10").stdout.splitlines()
    assert sum(not line.lstrip().startswith(";") for line in lines) == 10  # API call lines not counted
    lines = run("show", str(trace), "--blocks", "--limit", "3").stdout.splitlines()
    assert sum(line.startswith("block ") for line in lines) == 3
    assert "this many blocks" in " ".join(commands()["show"].params[2].help.split())


# --- exit statuses ---------------------------------------------------------------------------------------


def test_trace_exits_2_when_an_input_failed(tmp_path: Path, cli32: Path) -> None:
    """The issue's case: a wrong zip password, every member failing, used to exit 0."""
    locked = encrypted_zip(tmp_path / "s.zip", {"a.exe": cli32.read_bytes(), "b.exe": b"MZ"}, b"infected")
    result = run("trace", str(locked), "-o", str(tmp_path / "out"), "--password", "wrong")
    assert result.exit_code == 2 and "0 traced" in result.stdout and "2 errors" in result.stdout
    result = run("trace", str(cli32), "-o", str(tmp_path / "out"), "--workers", "1")
    assert result.exit_code == 0


def test_a_truncated_pe_is_an_error_naming_what_is_missing(tmp_path: Path, cli32: Path) -> None:
    cut = tmp_path / "cut.exe"
    cut.write_bytes(cli32.read_bytes()[:3000])
    result = run("trace", str(cut), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {cut}: truncated PE: section .text needs bytes 1,024 to 6,656, past the end of the file "
        "(3,000 bytes)"
    )


# --- tables at 80 columns --------------------------------------------------------------------------------


def test_tables_at_80_columns_keep_names_whole_and_apart(tmp_path: Path, cli32: Path) -> None:
    """Two app.exe from different folders stay apart; a sha256 name is cut to 12 digits; no line of the
    table is wider than 80 columns and no name is split over lines."""
    from runtrace.scan.render import render_report
    from runtrace.scan.scanner import Scanner, ScanOptions
    from scan_support import tiny_model_dir

    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.exe").write_bytes(cli32.read_bytes())
    traces = write_traces(tmp_path / "t", {"a" * 64: (True, 701, {})})
    scanner = Scanner.load(tiny_model_dir(), ScanOptions(explain=0, workers=1))
    from runtrace.scan.inputs import iter_inputs

    inputs = list(
        iter_inputs([tmp_path / "first" / "app.exe", tmp_path / "second" / "app.exe", *traces.values()])
    )
    report = scanner.run(inputs)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render_report(report, console)
    text = console.export_text()
    table = [line for line in text.splitlines() if line.startswith(("┃", "│", "┏", "┡", "└"))]
    assert table and all(len(line) <= 80 for line in table)
    assert any("first/app.exe" in line for line in table) and any("second/app.exe" in line for line in table)
    assert any("aaaaaaaaaaaa….rtrace" in line for line in table)


def test_the_trace_table_names_samples_apart(tmp_path: Path, cli32: Path) -> None:
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/app.exe", cli32.read_bytes())
        z.writestr("y/app.exe", cli32.read_bytes() + b"\0")
    result = CliRunner().invoke(app, ["trace", str(archive), "-o", str(tmp_path / "out")], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "x/app.exe" in result.stdout and "y/app.exe" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())

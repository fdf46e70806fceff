"""Format detection, load_any/save_as across formats, and the `runtrace convert` command."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import runtrace.cli.convert_cmd  # noqa: F401  (registers the command on the app)
from runtrace.cli.app import app
from runtrace.trace.formats.registry import (
    TraceReadError,
    detect_format,
    format_for_output,
    load_any,
    save_as,
)
from runtrace.trace.model import Arch
from trace_samples import block, full_dump, header, instructions, sample_trace

OLLY = "00401000  Main     PUSH EBP\n00401001  Main     MOV EBP,ESP\n00401003  Main     RETN\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file per format, all holding the same multi-threaded x86 trace (OllyDbg: its own)."""
    d = tmp_path_factory.mktemp("formats")
    trace = sample_trace(Arch.X86, runs=5, threads=(3, 4))
    out = {
        "trace": trace,
        "native": save_as(trace, d / "t.rtrace", "native"),
        "x64dbg": save_as(trace, d / "t.trace32", "x64dbg"),
        "text": save_as(trace, d / "t.log", "text"),
        "ollydbg": d / "olly.txt",
    }
    out["ollydbg"].write_text(OLLY)
    return out


def test_detection_by_extension_magic_and_content(files, tmp_path):
    assert detect_format(files["native"]) == "native"
    assert detect_format(files["x64dbg"]) == "x64dbg"
    assert detect_format(files["text"]) == "x64dbg-text"
    assert detect_format(files["ollydbg"]) == "ollydbg"
    # Misleading or missing extensions: the first bytes decide.
    for name in ("native", "x64dbg", "text"):
        other = tmp_path / f"{name}.bin"
        other.write_bytes(files[name].read_bytes())
        assert detect_format(other) == {"text": "x64dbg-text"}.get(name, name)


def test_load_any_reads_every_format_to_the_same_trace(files):
    trace = files["trace"]
    for name in ("native", "x64dbg"):
        back = load_any(files[name])
        assert instructions(back) == instructions(trace)
        assert back.blocks == trace.blocks and back.visits.tolist() == trace.visits.tolist()
    text = load_any(files["text"])
    assert [(t, i.address, i.text) for t, i in text.iter_instructions()] == [
        (t, i.address, i.text) for t, i in trace.iter_instructions()
    ]
    olly = load_any(files["ollydbg"])
    assert olly.meta.source == "ollydbg" and olly.instruction_count == 3


def test_text_blocks_survive_the_native_file(files, tmp_path):
    text = load_any(files["text"])
    back = load_any(save_as(text, tmp_path / "from_text.rtrace", "native"))
    assert back.blocks == text.blocks and back.meta.source == "x64dbg-text"
    with pytest.raises(ValueError, match="no instruction bytes"):
        save_as(text, tmp_path / "no.trace32", "x64dbg")


def test_explicit_format_and_line_pattern(files):
    assert load_any(files["text"], fmt="text").meta.source == "x64dbg-text"
    trace = load_any(files["ollydbg"], line_pattern=r"^(?P<address>[0-9A-F]{8})\s+\w+\s+(?P<instruction>.+)$")
    assert trace.meta.source == "text" and trace.instruction_count == 3
    with pytest.raises(ValueError, match="unknown trace format"):
        load_any(files["text"], fmt="pdf")


def test_every_read_problem_is_one_trace_read_error(tmp_path):
    cases = {
        "missing.rtrace": None,
        "junk.rtrace": b"not a zip at all",
        "junk.trace64": b"MZ\x90\x00",
        "junk.bin": bytes(range(256)) * 4,
        "empty.log": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(TraceReadError) as info:
            load_any(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, message


def test_allow_truncated_through_load_any(tmp_path):
    a = Arch.X86
    data = header(a) + block(a, b"\x55", full_dump(a, 0x401000), tid=1) + block(a, b"\xc3", [(8, 0x401001)])
    path = tmp_path / "cut.trace32"
    path.write_bytes(data[:-3])
    with pytest.raises(TraceReadError, match="block cut off"):
        load_any(path)
    assert load_any(path, allow_truncated=True).instruction_count == 1


def test_output_format_from_file_name():
    assert format_for_output("a.trace64") == "x64dbg"
    assert format_for_output("a.TXT") == "text"
    assert format_for_output("a.rtrace") == "native"
    with pytest.raises(ValueError, match="unknown output format"):
        save_as(None, "x", "pdf")


# --- runtrace convert -------------------------------------------------------------------------------

runner = CliRunner()


def test_convert_between_formats(files, tmp_path):
    out = tmp_path / "back.trace32"
    result = runner.invoke(app, ["convert", str(files["native"]), str(out)])
    assert result.exit_code == 0, result.output
    assert "instructions" in result.output
    assert out.read_bytes() == files["x64dbg"].read_bytes()  # the writer is deterministic

    out = tmp_path / "olly.rtrace"
    result = runner.invoke(app, ["convert", str(files["ollydbg"]), str(out), "--to", "native"])
    assert result.exit_code == 0, result.output
    assert load_any(out).meta.source == "ollydbg"

    out = tmp_path / "as_text.out"
    result = runner.invoke(
        app, ["convert", str(files["x64dbg"]), str(out), "--to", "text", "--from", "x64dbg"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == files["text"].read_text()


def test_convert_errors_are_one_line_without_traceback(files, tmp_path):
    bad = tmp_path / "bad.trace64"
    bad.write_bytes(b"TRAC\x02\x00\x00\x00{}")
    for args in (
        ["convert", str(bad), str(tmp_path / "o.rtrace")],
        ["convert", str(tmp_path / "missing.trace64"), str(tmp_path / "o.rtrace")],
        ["convert", str(files["native"]), str(tmp_path / "o.x"), "--to", "pdf"],
        ["convert", str(files["text"]), str(tmp_path / "o.trace32")],  # text has no bytes
        ["convert", str(files["text"]), str(tmp_path / "o.rtrace"), "--line-pattern", "(?P<address"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def test_convert_allow_truncated(tmp_path):
    a = Arch.AMD64
    data = header(a) + block(a, b"\x90", full_dump(a, 0x1000), tid=1) + block(a, b"\xc3", [(16, 0x1001)])
    path = tmp_path / "cut.trace64"
    path.write_bytes(data[:-1])
    result = runner.invoke(app, ["convert", str(path), str(tmp_path / "o.rtrace")])
    assert result.exit_code == 2 and "block cut off" in result.output
    result = runner.invoke(app, ["convert", str(path), str(tmp_path / "o.rtrace"), "--allow-truncated"])
    assert result.exit_code == 0, result.output
    assert "1 instructions" in result.output and "truncated" in result.output

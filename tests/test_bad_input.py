"""Every kind of bad input gets a one-line reason, in the library and on the command line."""

import struct
import zipfile

import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.trace.emulate.pe import UnsupportedInput, inspect_pe


def _pe(cli32_bytes: bytes, **patch) -> bytes:
    data = bytearray(cli32_bytes)
    e_lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if "machine" in patch:
        struct.pack_into("<H", data, e_lfanew + 4, patch["machine"])
    if "sections" in patch:
        struct.pack_into("<H", data, e_lfanew + 6, patch["sections"])
    if "size_of_image" in patch:
        struct.pack_into("<I", data, e_lfanew + 24 + 56, patch["size_of_image"])
    if "com_descriptor" in patch:  # data directory 14 of a PE32 optional header
        struct.pack_into("<II", data, e_lfanew + 24 + 96 + 14 * 8, 0x2000, 0x48)
    if "subsystem" in patch:
        struct.pack_into("<H", data, e_lfanew + 24 + 68, patch["subsystem"])
    return bytes(data)


@pytest.fixture
def good(cli32) -> bytes:
    return cli32.read_bytes()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda g: b"", "empty file"),
        (lambda g: bytes(range(256)) * 4, "not a PE file"),
        (lambda g: b"\x7fELF\x02\x01\x01" + b"\0" * 100, "ELF"),
        (lambda g: b"hello, this is a text file\n" * 10, "text"),
        (lambda g: b"MZ" + b"\0" * 20, "truncated DOS header"),
        (lambda g: b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40) + b"\0" * 64, "DOS-only"),
        (lambda g: g[:0x110], "truncated"),
        (lambda g: _pe(g, sections=4000), "absurd header value"),
        (lambda g: _pe(g, size_of_image=0), "SizeOfImage"),
        (lambda g: _pe(g, machine=0xAA64), "ARM64"),
        (lambda g: _pe(g, com_descriptor=True), ".NET"),
        (lambda g: _pe(g, subsystem=1), "driver"),
    ],
)
def test_bad_pe_is_refused_with_a_reason(good, make, message):
    with pytest.raises(UnsupportedInput, match=message) as info:
        inspect_pe(make(good))
    assert "\n" not in str(info.value)


def test_cli_reports_each_bad_input_and_goes_on(tmp_path, cli32):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.exe").write_bytes(b"")
    (bad / "random.bin").write_bytes(bytes(range(256)))
    (bad / "unreadable.exe").write_bytes(b"MZ")
    (bad / "unreadable.exe").chmod(0)
    archive = tmp_path / "locked.zip"
    # zipfile cannot write encrypted archives; an encrypted member is simulated by its flag bit, which is
    # what makes zipfile ask for a password.
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.exe", cli32.read_bytes())
    raw = bytearray(archive.read_bytes())
    raw[6] |= 1  # local header: encrypted
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 8] |= 1  # central directory: encrypted
    archive.write_bytes(bytes(raw))
    result = CliRunner().invoke(
        app,
        [
            "trace",
            str(bad),
            str(tmp_path / "missing.exe"),
            str(archive),
            str(cli32),
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "1",
        ],  # fmt: skip
    )
    assert result.exit_code == 2, result.output  # inputs failed (the good one was still traced)
    out = result.output
    assert "empty file" in out
    assert "not a PE file" in out
    assert "no such file or directory" in out
    assert "password" in out
    assert "Traceback" not in out
    # The good file was traced despite the others.
    assert (
        tmp_path / "out" / "32acc1bc543116cbe2cff10cb867772df2f254ff2634c870aef0b46c4b696fdb.rtrace"
    ).exists()

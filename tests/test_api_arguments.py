"""API calls carry their arguments and results; a trace carries a summary of the program's behaviour."""

import json
import struct
import subprocess
import sys
import zipfile

from conftest import FIXTURES
from emu_pe import Layout, program
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.formats.native import load_trace, save_trace
from runtrace.trace.model import ApiCall

DEMO_TRACES = sorted((FIXTURES.parents[1] / "src" / "runtrace" / "data" / "demo" / "traces").glob("*.rtrace"))


def _file_and_mutex_program() -> bytes:
    # CreateFileA("C:\\drop\\payload.bin", GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    # CreateMutexA(NULL, FALSE, "Global\\runtrace-test"); then return.
    def code(lay: Layout) -> bytes:
        path, mutex = lay.data, lay.data + 0x100
        return (
            b"\x6a\x00\x6a\x00\x6a\x02\x6a\x00\x6a\x00"  # push 0; push 0; push 2; push 0; push 0
            + b"\x68" + struct.pack("<I", 0x40000000)  # push GENERIC_WRITE
            + b"\x68" + struct.pack("<I", path)  # push path
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "CreateFileA"))
            + b"\x68" + struct.pack("<I", mutex) + b"\x6a\x00\x6a\x00"  # push name; push 0; push 0
            + b"\xff\x15" + struct.pack("<I", lay.slot("kernel32.dll", "CreateMutexA"))
            + b"\xc3"
        )  # fmt: skip

    strings = b"C:\\drop\\payload.bin\0".ljust(0x100, b"\0") + b"Global\\runtrace-test\0"
    return program("i386", code, {"kernel32.dll": ["CreateFileA", "CreateMutexA"]}, data=strings)


def test_calls_carry_their_arguments_strings_included_and_results():
    trace = emulate(_file_and_mutex_program(), "x", "dropper")
    create, mutex = trace.api_calls
    assert create.name == "kernel32.CreateFileA"
    assert create.args[0] == "C:\\drop\\payload.bin"
    assert len(create.args) == 7 and create.result not in (None, 0, 0xFFFFFFFF)
    assert mutex.args[2] == "Global\\runtrace-test" and mutex.result
    assert create.signature().startswith('kernel32.CreateFileA("C:\\\\drop\\\\payload.bin", ')


def test_the_behaviour_summary_names_the_file_and_the_mutex():
    behaviour = emulate(_file_and_mutex_program(), "x", "dropper").meta.behaviour
    assert [f["path"] for f in behaviour["files"]] == ["C:\\drop\\payload.bin"]
    assert behaviour["mutexes"] == ["Global\\runtrace-test"]
    assert "C:\\drop\\payload.bin" in behaviour["strings"]


def test_arguments_results_and_behaviour_survive_the_native_format(tmp_path):
    trace = emulate(_file_and_mutex_program(), "x", "dropper")
    back = load_trace(save_trace(trace, tmp_path / "t.rtrace"))
    assert back.api_calls == trace.api_calls
    assert back.meta.behaviour == trace.meta.behaviour
    # Stored uncompressed (scan's temporary traces), the same trace comes back.
    plain = save_trace(trace, tmp_path / "plain.rtrace", compress=False)
    with zipfile.ZipFile(plain) as members:
        assert {m.compress_type for m in members.infolist()} == {zipfile.ZIP_STORED}
    again = load_trace(plain)
    assert again.api_calls == trace.api_calls and again.blocks == trace.blocks
    assert (again.visits == trace.visits).all() and again.meta == back.meta


def test_version_1_traces_still_load_without_arguments():
    trace = load_trace(DEMO_TRACES[0])
    assert trace.api_calls and all(c.args == () and c.result is None for c in trace.api_calls)
    assert trace.meta.behaviour == {}


def test_a_stubbed_call_has_a_result_but_no_arguments():
    trace = emulate((FIXTURES / "benign" / "cli-32.exe").read_bytes(), "x", "cli-32")
    stubbed = [c for c in trace.api_calls if not c.supported]
    assert stubbed and all(c.args == () and c.result is not None for c in stubbed)


def test_signature_spells_strings_and_numbers():
    call = ApiCall(0, "kernel32.Sleep", 0x401000, True, (1000,), 0)
    assert call.signature() == "kernel32.Sleep(0x3e8) = 0x0"
    assert ApiCall(0, "a.B", 0, True, ('x"y', 3)).signature() == 'a.B("x\\"y", 3)'


def test_show_prints_arguments_and_the_summary(tmp_path):
    path = save_trace(emulate(_file_and_mutex_program(), "x", "dropper"), tmp_path / "t.rtrace")
    run = [sys.executable, "-m", "runtrace", "show"]
    lines = subprocess.run([*run, str(path)], capture_output=True, text=True, check=True).stdout
    assert '; api kernel32.CreateFileA("C:\\\\drop\\\\payload.bin", ' in lines
    summary = subprocess.run(
        [*run, str(path), "--summary"], capture_output=True, text=True, check=True
    ).stdout
    assert "mutexes (1):" in summary and "Global\\runtrace-test" in summary
    meta = json.loads(
        subprocess.run([*run, str(path), "--meta"], capture_output=True, text=True, check=True).stdout
    )
    assert meta["behaviour"]["mutexes"] == ["Global\\runtrace-test"]

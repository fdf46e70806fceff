"""The stand-in Python host's answers (winapi.PythonHost) and the service and runtime APIs around it, in
small emulated i386 programs (the C-API is cdecl)."""

import struct

from emu_pe import Data, Word, calls
from runtrace.trace.emulate import startup, winapi
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _run(steps, data=b""):
    trace = emulate(calls(steps, data), "x", "host")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    return trace


def test_a_fresh_interpreter_has_no_module_state_and_gives_text_and_buffers():
    # PyState_FindModule(def); PyUnicode_AsUTF8AndSize(obj, &size); PyUnicode_AsWideCharString(obj, NULL);
    # PyObject_GetBuffer(obj, &view, 0), then the program reads view.buf and view.len back into calls.
    trace = _run([
        ("python311.dll!PyState_FindModule", [Data(0)], "cdecl"),
        ("python311.dll!PyUnicode_AsUTF8AndSize", [0x21100, Data(0x40)], "cdecl", Data(0x48)),
        ("python311.dll!PyUnicode_AsWideCharString", [0x21100, 0], "cdecl"),
        ("python311.dll!PyObject_GetBuffer", [0x21100, Data(0x80), 0], "cdecl"),
        ("kernel32.dll!lstrlenA", [Word(0x48)]),
        ("kernel32.dll!lstrlenA", [Word(0x80)]),  # view.buf
    ])  # fmt: skip
    found, utf8, wide, buffer, length, view_length = trace.api_calls
    assert found.result == 0  # NULL: the module goes on to create itself
    assert utf8.result and length.args[0] == startup.DOCUMENT and length.result == len(startup.DOCUMENT)
    assert wide.result and wide.result != utf8.result
    assert buffer.result == 0 and view_length.args[0] == startup.DOCUMENT


def test_a_buffer_view_is_one_dimensional_bytes_of_the_exporting_object():
    from test_winapi import FakeMemory

    memory = FakeMemory()
    python = winapi.PythonHost(winapi._Scratch(memory, 64))
    assert python.get_buffer([0x5000, 0x30000, 0]) == 0
    buf, obj, length, itemsize = struct.unpack("<4Q", memory.mem_read(0x30000, 32))
    readonly, ndim = struct.unpack("<2i", memory.mem_read(0x30020, 8))
    assert memory.read_mem_string(buf, 1) == startup.DOCUMENT
    assert (obj, length, itemsize, readonly, ndim) == (0x5000, len(startup.DOCUMENT), 1, 1, 1)
    assert memory.mem_read(0x30028, 40) == bytes(40)  # format, shape, strides, ...: plain bytes


def test_a_service_registers_its_event_source_and_reports():
    trace = _run([
        ("advapi32.dll!RegisterEventSourceW", [0, Data(0)], Data(0x40)),
        ("advapi32.dll!ReportEventW", [Word(0x40), 1, 0, 0xC000000E, 0, 0, 0, 0, 0]),
        ("advapi32.dll!DeregisterEventSource", [Word(0x40)]),
    ], "Python Service\0".encode("utf-16-le"))  # fmt: skip
    register, report, deregister = trace.api_calls
    assert register.result == winapi.EVENT_SOURCE_HANDLE
    assert report.args[0] == winapi.EVENT_SOURCE_HANDLE and report.result == 1 and deregister.result == 1


def test_vcruntime_string_functions_are_the_c_runtime_s():
    # cx_Freeze's bases cut their own path at the last backslash with vcruntime140's wcsrchr.
    path = "C:\\dir\\base.exe\0".encode("utf-16-le")
    trace = _run([("vcruntime140.dll!wcsrchr", [Data(0), ord("\\")], "cdecl")], path)
    (found,) = trace.api_calls
    assert found.supported and found.result == found.args[0] + 2 * len("C:\\dir")

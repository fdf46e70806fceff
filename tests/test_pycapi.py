"""C-API capsules of the stand-in Python host (pycapi.py): numpy's `import_array()` in a small emulated
i386 program (cdecl calls into python311, then through the capsule's table)."""

import struct

from emu_pe import program
from runtrace.trace.emulate import pycapi
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason


def _import_array_program() -> bytes:
    data = b"numpy._core._multiarray_umath\0".ljust(0x40, b"\0") + b"_ARRAY_API\0"

    def code(lay) -> bytes:
        d = lambda offset: struct.pack("<I", lay.data + offset)  # noqa: E731
        py = lambda name: struct.pack("<I", lay.slot("python311.dll", name))  # noqa: E731
        k32 = struct.pack("<I", lay.slot("kernel32.dll", "SetLastError"))
        out = b"\x68" + d(0) + b"\xff\x15" + py("PyImport_ImportModule") + b"\x83\xc4\x04"  # module
        out += b"\x68" + d(0x40) + b"\x50"  # push "_ARRAY_API"; push eax
        out += b"\xff\x15" + py("PyObject_GetAttrString") + b"\x83\xc4\x08"  # the capsule
        out += b"\x89\xc3"  # mov ebx, eax
        out += b"\xff\x73\x04" + b"\xff\x15" + k32  # SetLastError(Py_TYPE(capsule)), recorded
        out += b"\xa1" + py("PyCapsule_Type") + b"\x50" + b"\xff\x15" + k32  # SetLastError(&PyCapsule_Type)
        out += b"\x6a\x00\x53" + b"\xff\x15" + py("PyCapsule_GetPointer") + b"\x83\xc4\x08"  # the table
        out += b"\x89\xc3"  # mov ebx, eax
        for slot in (0, 211, 210):  # ABI version, feature version, byte order
            out += b"\xff\x93" + struct.pack("<I", 4 * slot)  # call [ebx + 4 * slot]
        return out + b"\xc3"

    imports = {
        "python311.dll": [
            "PyImport_ImportModule",
            "PyObject_GetAttrString",
            "PyCapsule_GetPointer",
            "PyCapsule_Type",
        ],
        "kernel32.dll": ["SetLastError"],
    }
    return program("i386", code, imports, data=data)


def test_import_array_finds_a_capsule_and_a_numpy_it_can_use():
    trace = emulate(_import_array_program(), "x", "numpy-module")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    calls = trace.api_calls
    type_of_capsule, capsule_type = (c.args[0] for c in calls if c.name.endswith("SetLastError"))
    assert type_of_capsule == capsule_type != 0  # PyCapsule_CheckExact holds
    table = [c for c in calls if c.name.startswith("_ARRAY_API.")]
    assert [c.name.split(".")[1] for c in table] == [
        "PyArray_GetNDArrayCVersion", "PyArray_GetNDArrayCFeatureVersion", "PyArray_GetEndianness",
    ]  # fmt: skip
    assert [c.result for c in table] == [pycapi.NUMPY_2_ABI, 0x14, pycapi.NPY_CPU_LITTLE]


def test_the_numpy_of_an_older_interpreter_is_numpy_1():
    assert pycapi.python_version("python27") == (2, 7) and pycapi.python_version("PYTHON311") == (3, 11)
    assert pycapi.numpy_versions((2, 7)) == (pycapi.NUMPY_1_ABI, 0x0D)
    assert pycapi.numpy_versions((3, 10)) == (pycapi.NUMPY_2_ABI, 0x13)
    assert pycapi.numpy_versions((3, 13)) == (pycapi.NUMPY_2_ABI, 0x14)


def test_capsule_names_follow_the_c_api_convention():
    assert all(pycapi.is_capsule_name(n) for n in ("_ARRAY_API", "_UFUNC_API", "datetime_CAPI", "_C_API"))
    assert not any(pycapi.is_capsule_name(n) for n in ("__file__", "API_VERSION", "array"))

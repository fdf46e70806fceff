"""C-API capsules for the stand-in Python host: another extension module's function table.

Extension modules share C functions through capsules: a module attribute by convention named `*_API`
or `*_CAPI` (`numpy._core._multiarray_umath._ARRAY_API`, `datetime.datetime_CAPI`) holding a pointer to
a table of function pointers.  Every module built on numpy's C-API starts with `import_array()`: import
the module, get the attribute, check it is exactly a capsule (`Py_TYPE(o) == &PyCapsule_Type`), take the
table from it, then call the table's version functions and give up ("module compiled against ABI
version ...") unless the running numpy is one it can use.  With a stand-in object there, every scipy,
pandas or scikit-learn module stopped in its first instructions.

Here an attribute of such a name is a capsule: its type is the interpreter's `PyCapsule_Type` (the
module's data import of it gets storage, `install`), and `PyCapsule_GetPointer` gives a table whose
entries the emulator dispatches like APIs (`_ARRAY_API.slot_12`), answered by the Python host's stub
policy.  numpy's three start-up functions answer as the newest numpy for the interpreter's version
would (the host has one numpy, as an installation does): the ABI version, the C-API feature version
and the byte order.
"""

from __future__ import annotations

import fnmatch
import re

_CAPSULE_NAME = re.compile(r"_C?API$")
TABLE_SLOTS = 400  # numpy's _ARRAY_API has about 370 entries, _UFUNC_API about 50
CAPSULE_TYPE = "PyCapsule_Type"
# numpy's _ARRAY_API slots the start-up code calls (numpy/__multiarray_api.h).
SLOT_ABI_VERSION, SLOT_ENDIANNESS, SLOT_FEATURE_VERSION = 0, 210, 211
NUMPY_START_SLOTS = (SLOT_ABI_VERSION, SLOT_ENDIANNESS, SLOT_FEATURE_VERSION)
NPY_CPU_LITTLE = 1
NUMPY_2_ABI, NUMPY_1_ABI = 0x02000000, 0x01000009
# The C-API feature version (NPY_x_y_API_VERSION) of the newest numpy release for each interpreter:
# 2.7 -> numpy 1.16, 3.4 -> 1.15, 3.5/3.6 -> 1.18/1.19, 3.7 -> 1.21, 3.8 -> 1.24, 3.9 -> 2.0, 3.10 -> 2.2,
# later -> 2.3.
_FEATURE_VERSION = {(2, 7): 0x0D, (3, 4): 0x0C, (3, 5): 0x0D, (3, 6): 0x0D, (3, 7): 0x0E, (3, 8): 0x10,
                    (3, 9): 0x12, (3, 10): 0x13}  # fmt: skip
_NEWEST_FEATURE_VERSION = 0x14


def python_version(dll: str) -> tuple[int, int]:
    """(3, 11) for python311, (2, 7) for python27; (3, 11) when the name says nothing (python3.dll)."""
    digits = re.match(r"python(\d)(\d+)", dll.lower())
    return (int(digits.group(1)), int(digits.group(2))) if digits else (3, 11)


def numpy_versions(version: tuple[int, int]) -> tuple[int, int]:
    """(ABI version, C-API feature version) of the newest numpy for an interpreter version."""
    abi = NUMPY_2_ABI if version >= (3, 9) else NUMPY_1_ABI
    return abi, _FEATURE_VERSION.get(version, _NEWEST_FEATURE_VERSION if version > (3, 10) else 0x0C)


def is_capsule_name(name: str) -> bool:
    return bool(_CAPSULE_NAME.search(name))


class Capsules:
    """The capsules and tables of one emulation."""

    def __init__(self, se, ptr: int, make_object) -> None:
        self.se, self.ptr = se, ptr
        self._make_object = make_object  # () -> a stand-in object's address
        self._capsules: dict[int, str] = {}  # capsule object -> attribute name
        self._by_name: dict[str, int] = {}
        self._tables: dict[str, int] = {}
        self.version = (3, 11)

    def attribute(self, name: str) -> int:
        """The capsule object for attribute `name` (one per name)."""
        capsule = self._by_name.get(name)
        if capsule is None:
            capsule = self._make_object()
            type_address = getattr(self.se.emu, "runtrace_py_data", {}).get(CAPSULE_TYPE)
            if type_address:  # the program imports PyCapsule_Type: Py_TYPE(capsule) is that
                self.se.mem_write(capsule + self.ptr, type_address.to_bytes(self.ptr, "little"))
            self._capsules[capsule] = name
            self._by_name[name] = capsule
        return capsule

    def pointer(self, api_name: str, argv: list) -> int | None:
        """PyCapsule_GetPointer(capsule, name): the capsule's table; None for an object that is not
        one of these capsules (the host answers as for any call)."""
        name = self._capsules.get(argv[0])
        if name is None:
            return None
        self.version = python_version(api_name.split(".", 1)[0])
        table = self._tables.get(name)
        if table is None:
            emu = self.se.emu
            entries = b"".join(
                emu.get_proc(name, slot_name(name, i)).to_bytes(self.ptr, "little")
                for i in range(TABLE_SLOTS)
            )
            table = self.se.mem_alloc(len(entries), tag=f"runtrace.py_capi.{name[:32]}")
            self.se.mem_write(table, entries)
            self._tables[name] = table
        return table

    def numpy_slot(self, slot: int) -> int:
        abi, feature = numpy_versions(self.version)
        return {SLOT_ABI_VERSION: abi, SLOT_FEATURE_VERSION: feature, SLOT_ENDIANNESS: NPY_CPU_LITTLE}[slot]


def slot_name(table: str, index: int) -> str:
    known = {
        SLOT_ABI_VERSION: "PyArray_GetNDArrayCVersion",
        SLOT_ENDIANNESS: "PyArray_GetEndianness",
        SLOT_FEATURE_VERSION: "PyArray_GetNDArrayCFeatureVersion",
    }
    return known[index] if table == "_ARRAY_API" and index in known else f"slot_{index}"


def install_data() -> None:
    """Give a Python DLL's `PyCapsule_Type` storage where a module imports it as data (idempotent): the
    address its import holds is then one the host can put in a capsule's type field.  (Other type
    objects keep Speakeasy's answer.)"""
    from speakeasy.winenv.api.winapi import WindowsApi

    lookup = WindowsApi.get_data_export_handler
    if getattr(lookup, "runtrace_python", False):
        return

    def get_data_export_handler(self, mod_name, exp_name):
        module, handler = lookup(self, mod_name, exp_name)
        if handler or exp_name != CAPSULE_TYPE or not fnmatch.fnmatch(mod_name.lower(), "python*"):
            return module, handler
        return module, lambda _module, _ptr: _type_object(self.emu, exp_name)

    get_data_export_handler.runtrace_python = True
    get_data_export_handler.runtrace_crt = getattr(lookup, "runtrace_crt", False)
    WindowsApi.get_data_export_handler = get_data_export_handler


def _type_object(emu, name: str) -> int:
    ptr = emu.get_ptr_size()
    known = emu.__dict__.setdefault("runtrace_py_data", {})
    if name not in known:
        address = emu.mem_map(0x200, tag=f"runtrace.py.{name}")
        # ob_refcnt (large: never freed), ob_type (type's own type is not checked here: itself).
        emu.mem_write(address, (1 << 24).to_bytes(ptr, "little") + address.to_bytes(ptr, "little"))
        known[name] = address
    return known[name]

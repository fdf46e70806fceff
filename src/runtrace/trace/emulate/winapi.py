"""Windows APIs Speakeasy lacks but ordinary programs call early (C-runtime start-up, console, UI,
delay-loaded imports), and a stand-in Python host for extension modules.

Without them most programs built against the universal C runtime stop within a few instructions, before
their own code runs.  Each handler does what a program needs to go on (plausible pointers and success
values), not a full reimplementation; anything not listed here is stubbed by the emulator backend, with
the value `Host.stub_value` gives.
"""

from __future__ import annotations

import fnmatch
import struct
from collections.abc import Callable, Iterator

from speakeasy.profiler import Run
from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import (
    ansitext,
    atl,
    cfile,
    cocreate,
    crtformat,
    crtlocale,
    desktop,
    environment,
    filedata,
    filepointer,
    gui,
    inifiles,
    lsa,
    mfc,
    mfcstring,
    missingapi,
    msasn1,
    processes,
    propsheet,
    pyargs,
    pycapi,
    regquery,
    resources,
    secdesc,
    seh32,
    shellpaths,
    shellpidl,
    simpleanswers,
    startup,
    startupapis,
    stdstring,
    stubbed,
    stubnames,
    sysapi,
    versioninfo,
    wsock32,
)
from runtrace.trace.emulate.callbacks import Callbacks
from runtrace.trace.emulate.crtfuncs import CrtFunctions
from runtrace.trace.emulate.crtnumbers import CrtNumbers
from runtrace.trace.emulate.crtstrings import CrtStrings
from runtrace.trace.emulate.startup import command_line_text, empty_environment

CDECL = se_arch.CALL_CONV_CDECL
STDCALL = se_arch.CALL_CONV_STDCALL

# Module patterns (fnmatch, lower case) a C-runtime function may be imported from.  (vcruntime140 exports
# the string and memory functions the compiler may call, `wcsrchr`, `strstr`, ..., besides memset and
# memcpy: Speakeasy folds it into msvcrt, as it does the others.)
_CRT = ("ucrtbase", "ucrtbased", "msvcrt", "msvcr*", "api-ms-win-crt-*", "vcruntime*", "crtdll")
_DELAYLOAD = ("kernel32", "kernelbase", "api-ms-win-core-delayload-*")


class _Scratch:
    """Small allocations shared by the handlers of one emulation (strings, pointer arrays)."""

    def __init__(self, se, bits: int) -> None:
        self.se = se
        self.ptr = bits // 8
        self._cache: dict[str, int] = {}

    def alloc(self, data: bytes, key: str) -> int:
        addr = self._cache.get(key)
        if addr is None:
            addr = self.se.mem_alloc(max(len(data), 16), tag=f"runtrace.{key}")
            self.se.mem_write(addr, data)
            self._cache[key] = addr
        return addr

    def pointer_to(self, value: int, key: str) -> int:
        return self.alloc(value.to_bytes(self.ptr, "little"), key)

    def command_line(self, wide: bool) -> int:
        text = command_line_text(wide, self.se.emu.command_line)
        return self.alloc(text, "cmdline_w" if wide else "cmdline_a")

    def env_block(self, wide: bool) -> int:
        return self.alloc(empty_environment(self.ptr), "env_w" if wide else "env_a")

    def argv(self, wide: bool) -> int:
        key = "argv_w" if wide else "argv_a"
        if key not in self._cache:
            command_line = self.se.emu.command_line
            size = len(startup.argv_array(0, self.ptr, wide, command_line))
            address = self.se.mem_alloc(size, tag=f"runtrace.{key}")
            self.se.mem_write(address, startup.argv_array(address, self.ptr, wide, command_line))
            self._cache[key] = address
        return self._cache[key]


# Python C-API functions that return an int status (0 = success) rather than an object pointer.
_PY_STATUS_PREFIXES = (
    "PyModule_Add", "PyModule_ExecDef", "PyModule_SetDocString", "PyType_Ready", "PyDict_SetItem",
    "PyDict_DelItem", "PyObject_SetAttr", "PyObject_GenericSetAttr", "PyList_Append", "PyList_Insert",
    "PyList_SetItem", "PyTuple_SetItem", "PyState_AddModule", "PyErr_", "Py_AtExit", "PyCapsule_Set",
    "PyOS_snprintf", "PyEval_", "PyGILState_", "PyThread_", "PySys_Set", "Py_Finalize",
)  # fmt: skip
# (PyStatus_Exception and friends: "did initialisation fail?", no.)
_PY_STATUS_PREFIXES += ("PyStatus_Exception", "PyStatus_Is")
# ... and those whose success is a true int.
_PY_TRUE = ("PyArg_Parse", "PyArg_Unpack", "Py_IsInitialized", "PyCallable_Check", "PyType_IsSubtype")
_PY_EXISTING_MODULES = ("builtins", "__builtin__", "__main__", "sys")
# Argument parsers: the position of the format and of the first output.
_PY_PARSE_FUNCTIONS = (
    ("PyArg_ParseTuple", 1, 2), ("_PyArg_ParseTuple_SizeT", 1, 2), ("PyArg_Parse", 1, 2),
    ("_PyArg_Parse_SizeT", 1, 2), ("PyArg_ParseTupleAndKeywords", 2, 4),
    ("_PyArg_ParseTupleAndKeywords_SizeT", 2, 4),
)  # fmt: skip
_PY_PARSE_OUTPUTS = 24  # output pointers read past the declared arguments, from the stack
SERVICE_STATUS_HANDLE = 0x5E500001
EVENT_SOURCE_HANDLE = 0x5E500002
_PY_MOD_EXEC = 2  # Py_mod_exec, from CPython's moduleobject.h
_PY_OBJECT_SIZE = 0x100
_PY_OBJECTS = 256
_PY_REFCOUNT = 1 << 24  # objects are never freed: Py_DECREF never reaches 0 and calls no dealloc
# Pointer-sized slots of a PyTypeObject (the same from CPython 2.7 to 3.13): tp_name, tp_basicsize,
# tp_flags (a C long: 4 bytes on Windows, in a slot of its own) and tp_methods.
_TP_NAME, _TP_BASICSIZE, _TP_FLAGS, _TP_METHODS = 3, 4, 21, 29
# Py_TPFLAGS_TYPE_SUBCLASS | Py_TPFLAGS_READY: PyType_Check is true, the type needs no PyType_Ready.
_TP_FLAGS_VALUE = (1 << 31) | (1 << 12)
# A basic size no compiled-in struct exceeds, so Cython's `__Pyx_ImportType` size check ("size changed,
# may indicate binary incompatibility") passes for the "warn" and "ignore" policies Cython uses for
# imported types; it would fail the "error" policy, whatever size were given.
_TP_BASICSIZE_VALUE = 0x10000
# PyModuleDef: PyModuleDef_Base (5 pointers), m_name, m_doc, m_size, m_methods, m_slots.
_DEF_METHODS, _DEF_SLOTS = 8, 9
# PyMethodDef.ml_flags, for the arguments a module function is called with.
_METH_NOARGS, _METH_O, _METH_FASTCALL = 0x4, 0x8, 0x80


class PythonHost:
    """A stand-in interpreter for `.pyd` extension modules and embedding launchers.

    Without one, `PyInit_<name>` gets NULL from `PyModule_Create2` and returns at once: the module's own
    initialisation (type set-up, constants, imports) never runs.  Here every object-returning C-API call
    gets a distinct object with a huge reference count, status calls succeed, and error queries report
    no error.  The objects are recycled from a fixed pool.  Every object also reads as a ready type
    object (named "object", with a large basic size) whose type is a type: modules look up the types
    they build on (`__Pyx_ImportType` in every Cython module) and give up when the answer is not one.

    A module's functions are what a DLL's exports are: the interpreter calls them, the module never
    does.  So the functions a module registers (its definition's method table, a type's `tp_methods`,
    `PyCFunction_NewEx`) are queued as runs after the exports, like the `Py_mod_exec` slots, up to
    `max_methods` per sample, each called with stand-in objects as its arguments.
    """

    def __init__(self, scratch: _Scratch, max_methods: int = 64) -> None:
        self.s = scratch
        self._pool = 0
        self._next = 0
        self.max_methods = max_methods
        self._queued: set[int] = set()
        self._empty_module = 0
        self.capsules = pycapi.Capsules(scratch.se, scratch.ptr, self._object)

    def module_def_init(self, argv: list) -> int:
        """PyModuleDef_Init(def): multi-phase initialisation (every Cython module).

        `PyInit_<name>` only returns its module definition; the interpreter then runs the definition's
        `Py_mod_exec` slots on a new module, and that is where the module's own code is.  They are queued
        as runs after the exports, each given a stand-in module object, then the module's functions.
        """
        definition, ptr = argv[0], self.s.ptr
        try:
            slots = self._pointer(definition + _DEF_SLOTS * ptr)
            for i in range(16 if slots else 0):  # a {0, NULL}-terminated array of {int slot; void *value}
                entry = bytes(self.s.se.mem_read(slots + i * 2 * ptr, 2 * ptr))
                kind, function = int.from_bytes(entry[:4], "little"), int.from_bytes(entry[ptr:], "little")
                if kind == 0:
                    break
                if kind == _PY_MOD_EXEC and function:
                    self._queue_run(function, f"python.mod_exec_{i}", [self._object()])
        except Exception:  # an unreadable definition: the module is simply not initialised further
            pass
        self.queue_methods(self._pointer_or_zero(definition + _DEF_METHODS * ptr))
        return definition

    def module_create(self, argv: list) -> int:
        """PyModule_Create2(def, api_version): single-phase initialisation; the module object."""
        self.queue_methods(self._pointer_or_zero(argv[0] + _DEF_METHODS * self.s.ptr))
        return self._object()

    def init_module4(self, argv: list) -> int:
        """Py_InitModule4(name, methods, doc, self, api_version), Python 2's module creation."""
        self.queue_methods(argv[1])
        return self._object()

    def type_ready(self, argv: list) -> int:
        """PyType_Ready(type): the type's methods become callable; 0, success."""
        self.queue_methods(self._pointer_or_zero(argv[0] + _TP_METHODS * self.s.ptr))
        return 0

    def new_function(self, argv: list) -> int:
        """PyCFunction_NewEx(method_def, self, module) and friends: a function object."""
        self.queue_methods(argv[0], count=1)
        return self._object()

    def queue_methods(self, table: int, count: int = 256) -> None:
        """Queue the functions of a PyMethodDef array ({name, function, int flags, doc}, NULL-ended)."""
        ptr = self.s.ptr
        try:
            for i in range(count if table else 0):
                if len(self._queued) >= self.max_methods:
                    return
                entry = bytes(self.s.se.mem_read(table + i * 4 * ptr, 3 * ptr))
                name, function = (
                    int.from_bytes(entry[:ptr], "little"),
                    int.from_bytes(entry[ptr : 2 * ptr], "little"),
                )
                flags = int.from_bytes(entry[2 * ptr : 2 * ptr + 4], "little")
                if not name or not function:
                    return
                if function not in self._queued:
                    self._queued.add(function)
                    label = self.s.se.read_mem_string(name, 1)[:64]
                    self._queue_run(function, f"python.function.{label}", self._arguments(flags))
        except Exception:  # an unreadable table: the functions read so far are queued
            pass

    def _arguments(self, flags: int) -> list[int]:
        """A call the way CPython makes it: (self, args...) per the calling convention in ml_flags."""
        module, arg = self._object(), self._object()
        if flags & _METH_NOARGS:
            return [module, 0]
        if flags & _METH_O:
            return [module, arg]
        if flags & _METH_FASTCALL:  # (self, PyObject *const *args, Py_ssize_t nargs, kwnames)
            return [module, self.s.pointer_to(arg, "py_fastcall_args"), 1, 0]
        return [module, arg, 0]  # METH_VARARGS (| METH_KEYWORDS): (self, args tuple, kwargs)

    def parse_arguments(self, argv: list, fmt_index: int, first_output: int, ssize_lengths: bool) -> int:
        """PyArg_ParseTuple(args, format, ...) and its variants: store a plausible value of the kind
        each format unit asks for (pyargs.py) through the output pointers; 1, success."""
        s, ptr = self.s, self.s.ptr
        try:
            kinds = pyargs.output_kinds(s.se.read_mem_string(argv[fmt_index], 1))
        except Exception:  # an unreadable format: success, nothing stored
            return 1
        text, document = startup.DOCUMENT.encode(), startup.DOCUMENT
        length_size = ptr if ssize_lengths else 4
        values: dict[object, bytes] = {
            pyargs.TEXT: s.alloc(text + b"\0", "py_text").to_bytes(ptr, "little"),
            pyargs.WIDE_TEXT: s.alloc(document.encode("utf-16-le") + b"\0\0", "py_wtext").to_bytes(
                ptr, "little"
            ),
            pyargs.LENGTH: len(text).to_bytes(length_size, "little"),
            pyargs.FLOAT: struct.pack("<f", 1.0),
            pyargs.DOUBLE: struct.pack("<d", 1.0),
            pyargs.COMPLEX: struct.pack("<dd", 1.0, 0.0),
            "ssize": (1).to_bytes(ptr, "little"),
        }
        for kind, out in zip(kinds, argv[first_output:], strict=False):  # more outputs than read: unset
            if kind == pyargs.SKIP or not out:
                continue
            if kind == pyargs.OBJECT:
                data = self._object().to_bytes(ptr, "little")
            elif kind == pyargs.BUFFER:  # Py_buffer: buf, obj, len, itemsize
                data = b"".join(
                    v.to_bytes(ptr, "little")
                    for v in (s.alloc(text + b"\0", "py_text"), self._object(), len(text), 1)
                )
            elif isinstance(kind, int):
                data = (1).to_bytes(kind, "little")
            else:
                data = values[kind]
            try:
                s.se.mem_write(out, data)
            except Exception:  # a bad output pointer: the rest are still stored
                continue
        return 1

    def add_module(self, argv: list) -> int:
        """PyImport_AddModule(name): the module of that name, created empty when there is none.  An
        interpreter has `builtins`, `__main__` and `sys`; any other name gives the (one) empty module,
        which has no attributes: Cython modules keep their shared types on a module of their ABI's name
        and create them there when the lookup fails, where a found stand-in "type" of the wrong size
        made them give up."""
        try:
            name = self.s.se.read_mem_string(argv[0], 1)
        except Exception:
            name = ""
        if name in _PY_EXISTING_MODULES:
            return self._object()
        if not self._empty_module:
            self._object()  # the pool, and its type object just before it
            type_obj = self._pool - _PY_OBJECT_SIZE
            self._empty_module = self.s.alloc(self._object_bytes(type_obj, 0), "py_empty_module")
        return self._empty_module

    def get_attribute(self, argv: list, by_string: bool = False) -> int:
        """PyObject_GetAttr / PyObject_GetAttrString(object, name): NULL (AttributeError) on the empty
        module, a capsule for a C-API table's name (pycapi.py), a stand-in object otherwise."""
        if argv[0] and argv[0] == self._empty_module:
            return 0
        if by_string:
            try:
                name = self.s.se.read_mem_string(argv[1], 1)
            except Exception:
                name = ""
            if pycapi.is_capsule_name(name):
                return self.capsules.attribute(name)
        return self._object()

    def capsule_pointer(self, api_name: str, argv: list) -> int:
        """PyCapsule_GetPointer(capsule, name): a C-API capsule's table, or a stand-in pointer."""
        table = self.capsules.pointer(api_name, argv)
        return self._object() if table is None else table

    def text(self, argv: list, wide: bool, size_at: int | None = None) -> int:
        """PyUnicode_AsUTF8, PyUnicode_AsWideCharString, PyBytes_AsString and friends: the object's text,
        as a C string (the emulated document's path, as `parse_arguments` gives), its length stored
        through the optional size output.  A stand-in object's own bytes made a garbage or empty
        string: a launcher asking for a module's `__file__` looked up a module named ""."""
        s = self.s
        document = startup.DOCUMENT
        encoded = document.encode("utf-16-le") + b"\0\0" if wide else document.encode() + b"\0"
        if size_at is not None and len(argv) > size_at and argv[size_at]:
            s.se.mem_write(argv[size_at], len(document).to_bytes(s.ptr, "little"))
        return s.alloc(encoded, "py_wtext" if wide else "py_text")

    def get_buffer(self, argv: list) -> int:
        """PyObject_GetBuffer(object, Py_buffer *view, flags): the object exports a one-dimensional
        buffer of bytes (the emulated document's path, as `parse_arguments` gives for "s*"); 0,
        success.  A stand-in object as the int status read as failure (-1 is the only one)."""
        s, ptr = self.s, self.s.ptr
        obj, view = argv[:2]
        data = startup.DOCUMENT.encode()
        # Py_buffer: buf, obj, len, itemsize (Py_ssize_t each), readonly, ndim (int each), then format,
        # shape, strides, suboffsets, internal (pointers): NULL format and shape mean plain bytes.
        head = b"".join(
            v.to_bytes(ptr, "little") for v in (s.alloc(data + b"\0", "py_text"), obj, len(data), 1)
        )
        s.se.mem_write(view, head + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(5 * ptr))
        return 0

    def _pointer(self, address: int) -> int:
        return int.from_bytes(bytes(self.s.se.mem_read(address, self.s.ptr)), "little")

    def _pointer_or_zero(self, address: int) -> int:
        try:
            return self._pointer(address)
        except Exception:
            return 0

    def _queue_run(self, address: int, kind: str, args: list[int]) -> None:
        run = Run()
        run.start_addr, run.type, run.args = address, kind, args
        self.s.se.emu.add_run(run)

    def value(self, name: str) -> int:
        if name.startswith(_PY_STATUS_PREFIXES):
            return 0
        if name.startswith(_PY_TRUE):
            return 1
        return self._object()

    def _object(self) -> int:
        if not self._pool:
            self._pool = self._stand_in_objects()
        address = self._pool + self._next * _PY_OBJECT_SIZE
        self._next = (self._next + 1) % _PY_OBJECTS
        return address

    def _stand_in_objects(self) -> int:
        """The type object (its own type), then the pool of objects of that type (all read as types);
        returns the address of the pool's first object."""
        base = self.s.se.mem_alloc(_PY_OBJECT_SIZE * (_PY_OBJECTS + 2), tag="runtrace.py_pool")
        name = base + _PY_OBJECT_SIZE * (_PY_OBJECTS + 1)

        type_obj = base
        one = self._object_bytes(type_obj, name)
        self.s.se.mem_write(base, one * (_PY_OBJECTS + 1) + b"object\0")
        return base + _PY_OBJECT_SIZE

    def _object_bytes(self, type_obj: int, name: int) -> bytes:
        """One stand-in object of the given type, readable as a type object named by `name`."""
        ptr = self.s.ptr
        fields = {0: _PY_REFCOUNT, 1: type_obj, _TP_NAME: name, _TP_BASICSIZE: _TP_BASICSIZE_VALUE}
        fields[_TP_FLAGS] = _TP_FLAGS_VALUE
        out = bytearray(_PY_OBJECT_SIZE)
        for slot, value in fields.items():
            out[slot * ptr : (slot + 1) * ptr] = value.to_bytes(ptr, "little")
        return bytes(out)


class Host:
    """What an API without a handler returns: 0, except where a stand-in host gives a better value;
    and the handlers for DLLs Speakeasy has no module for (MFC), which may call the program's code."""

    def __init__(
        self, python: PythonHost, own: dict[tuple[str, str], tuple[int, Callable]] | None = None
    ) -> None:
        self.python = python
        self._own = own or {}

    def own_handler(self, dll: str, name: str) -> tuple[int, Callable] | None:
        """(stdcall argc, handler(emu, argv)) for an API of a DLL Speakeasy does not know, or None."""
        return self._own.get((dll.lower(), name))

    def stub_value(self, emu, dll: str, name: str) -> int:
        if name.startswith("??0"):  # a C++ constructor returns `this`, and callers go on with it
            return this_argument(emu)
        if stubnames.is_pywin32(dll, name):
            return stubnames.cpp_value(name, self.python.value)
        if dll.lower().startswith("python") or pycapi.is_capsule_name(dll):  # ... or a C-API table's
            return self.python.value(name)
        if dll.lower().startswith("msvcp") and name.startswith(_CPP_RETURNS_ITS_STREAM):
            return stream_argument(emu, name)
        return stubnames.value(emu, name)


# The C++ library's stream operators and manipulators (`operator<<`, `operator>>`, `endl`, ...) return
# the stream they were given, and programs chain them: `cout << "x" << endl`.  A stubbed one returning 0
# made the next link call through a NULL stream.
_CPP_RETURNS_ITS_STREAM = ("??6", "??5", "?endl@", "?ends@", "?flush@")


def this_argument(emu) -> int:
    """`this` of a stubbed C++ member function: ecx on x86 (thiscall), rcx on amd64."""
    return emu.reg_read(se_arch.AMD64_REG_RCX if emu.get_ptr_size() == 8 else se_arch.X86_REG_ECX)


def stream_argument(emu, mangled: str) -> int:
    """The stream a stubbed C++ stream function was called on: `this` for a member (thiscall: ecx on
    x86; a `@@Q` access code in the mangled name), otherwise the first argument (rcx on amd64)."""
    if emu.get_ptr_size() == 8 or "@@Q" in mangled:
        return this_argument(emu)
    return int.from_bytes(bytes(emu.mem_read(emu.get_stack_ptr() + 4, 4)), "little")


def resolve_delay_loaded_api(s: _Scratch, argv: list) -> int:
    """kernel32.ResolveDelayLoadedAPI: bind one delay-loaded import, as the Windows loader does.

    Newer MSVC programs resolve delay-loaded imports through it on first call; a 0 return is then
    called.  The import's DLL and name are read from the delay-load descriptor (RVAs relative to the
    image base) and bound to an address the emulator dispatches like any dynamically resolved API.
    """
    base, descriptor, _, _, thunk = argv[:5]
    se, ptr = s.se, s.ptr
    try:
        _attrs, dll_rva, _, iat_rva, int_rva = struct.unpack("<5I", bytes(se.mem_read(descriptor, 20)))
        dll = se.read_mem_string(base + dll_rva, 1)
        index = (thunk - (base + iat_rva)) // ptr
        entry = int.from_bytes(bytes(se.mem_read(base + int_rva + index * ptr, ptr)), "little")
        by_ordinal = entry >> (ptr * 8 - 1)
        name = f"ordinal_{entry & 0xFFFF}" if by_ordinal else se.read_mem_string(base + entry + 2, 1)
        address = se.emu.get_proc(dll.lower().rsplit(".", 1)[0], name)
        se.mem_write(thunk, address.to_bytes(ptr, "little"))
        return address
    except Exception:  # a malformed descriptor: the program gets 0, as from a failed bind
        return 0


def raise_exception(s: _Scratch, argv: list, seh64=None) -> int:
    """kernel32.RaiseException: to the program's exception handlers, or the end of the entry point.

    Speakeasy's own handler simply returns, which Windows never does for an exception nobody handles:
    Wine's unimplemented-function stubs and `noreturn` error paths then run on into whatever code
    follows, and many loop through RaiseException until the time limit.  Here the exception goes to the
    program's SEH handlers (x86 frames; amd64 unwind tables, `seh64`; an unhandled-exception filter);
    when none takes it, the entry point ends as the process would, with the exception code as its error.
    """
    if seh64 is not None:
        seh64.raise_from_api(argv)
        return 0
    code = argv[0] & 0xFFFFFFFF
    if not s.se.emu.dispatch_seh(code):
        seh32.end_unhandled(s.se.emu, code)
    return 0


def get_main_args(s: _Scratch, argv: list, wide: bool) -> int:
    """msvcrt's __getmainargs / __wgetmainargs(&argc, &argv, &env, wildcard, startinfo): Speakeasy's
    handler writes none of the three, so `main` got whatever the stack held as argc and argv."""
    p_argc, p_argv, p_env = argv[:3]
    for address, value, size in (
        (p_argc, len(startup.arguments(s.se.emu.command_line)), 4),
        (p_argv, s.argv(wide), s.ptr),
        (p_env, s.env_block(wide), s.ptr),
    ):
        if address:
            s.se.mem_write(address, value.to_bytes(size, "little"))
    return 0


def _overrides(s: _Scratch, seh64=None) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
    """Handlers that replace Speakeasy's own."""
    formatter = crtformat.Formatter(s.se, s.ptr * 8)
    out = [(_CRT, name, argc, CDECL, fn) for name, argc, fn in formatter.handlers()]
    out += [(("user32",), name, argc, CDECL, fn) for name, argc, fn in formatter.wsprintf_handlers()]
    out += [(("user32",), name, argc, STDCALL, fn) for name, argc, fn in formatter.wvsprintf_handlers()]
    # Speakeasy's operator new returns nothing; it lacks the rest (crtfuncs.py).
    out += [(_CRT, name, argc, CDECL, _safe(fn)) for name, argc, fn in CrtFunctions(s.se, s.ptr).handlers()]
    out += [(_CRT, name, argc, CDECL, _safe(fn)) for name, argc, fn in CrtNumbers(s.se, s.ptr).handlers()]
    out += [(_CRT, name, argc, CDECL, _safe(fn)) for name, argc, fn in CrtStrings(s.se, s.ptr).handlers()]
    code_page = crtlocale.MultibyteCodePage()
    pctype = _safe(lambda a: s.alloc(crtlocale.table(), "ctype") + 2)  # `__pctype_func`: `_pctype`'s value
    out += [(_CRT, "_isctype", 2, CDECL, _safe(crtlocale.isctype)), (_CRT, "__pctype_func", 0, CDECL, pctype)]
    out += [
        (_CRT, "_setmbcp", 1, CDECL, _safe(code_page.set)),
        (_CRT, "_getmbcp", 0, CDECL, _safe(code_page.get)),
    ]
    if seh64 is not None:
        # With amd64 exceptions dispatched to the program's handlers, the C runtime's filters must answer
        # as the runtime does for an exception no signal handler was set for: "continue the search"
        # (Speakeasy's say "execute the handler", and the start-up code's __except then ends the
        # program at its first fault).
        out += [(_CRT, name, argc, CDECL, lambda a: 0) for name, argc in
                (("_seh_filter_exe", 2), ("_seh_filter_dll", 2))]  # fmt: skip
    # msvcrt's `_XcptFilter(code, pointers)`, the filter of the start-up code's __try: for an exception
    # with no `signal` action (SIG_DFL; the tracer emulates no `signal`) it answers
    # EXCEPTION_CONTINUE_SEARCH (0), and the system's last-chance handling ends the process.  On x86 it
    # was a stub whose 0 happened to agree; it is an answered call now.
    out.append((_CRT, "_XcptFilter", 2, CDECL, lambda a: 0))
    # Speakeasy's handlers of these return nothing (eax as it was) where the runtime returns 0 for
    # success; with the C runtime's initialisers run (`_initterm_e`), the universal CRT's
    # `pre_c_initialization` checks them and ends the program with `__fastfail` on a non-zero one.
    out += [(_CRT, name, argc, CDECL, lambda a: 0) for name, argc in (
        ("_configure_narrow_argv", 1), ("_configure_wide_argv", 1), ("_initialize_narrow_environment", 0),
        ("_initialize_wide_environment", 0), ("_set_fmode", 1), ("_crt_atexit", 1), ("_controlfp_s", 3),
        ("_configthreadlocale", 1), ("_set_new_mode", 1),
    )]  # fmt: skip
    return out + [
        (("kernel32", "kernelbase"), "RaiseException", 4, STDCALL, lambda a: raise_exception(s, a, seh64)),
        (("ole32", "combase"), "CoCreateInstance", 5, STDCALL, lambda a: cocreate.create(s.se, s.ptr, a)),
        (_CRT, "__getmainargs", 5, CDECL, lambda a: get_main_args(s, a, wide=False)),
        (_CRT, "__wgetmainargs", 5, CDECL, lambda a: get_main_args(s, a, wide=True)),
        # crtdll.dll's (argc, argv, environment, wildcards): the same, without the start-up info.
        (_CRT, "__GetMainArgs", 4, CDECL, lambda a: get_main_args(s, a, wide=False)),
    ]


def _handlers(
    s: _Scratch, python: PythonHost
) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
    """(modules, name, argc, calling convention, handler(argv) -> return value)."""
    zero = lambda argv: 0  # noqa: E731  (success for the CRT's int-returning set-up functions)
    one = lambda argv: 1  # noqa: E731
    crt = [
        ("_configure_wide_argv", 1, zero),
        ("_configure_narrow_argv", 1, zero),
        ("_initialize_wide_environment", 0, zero),
        ("_initialize_narrow_environment", 0, zero),
        ("_get_narrow_winmain_command_line", 0, lambda a: s.command_line(False)),
        ("_get_wide_winmain_command_line", 0, lambda a: s.command_line(True)),
        ("__p___initenv", 0, lambda a: s.pointer_to(s.env_block(False), "p_initenv")),
        ("__p__environ", 0, lambda a: s.pointer_to(s.env_block(False), "p_environ")),
        ("__p__wenviron", 0, lambda a: s.pointer_to(s.env_block(True), "p_wenviron")),
        ("__iob_func", 0, lambda a: s.alloc(b"\0" * 3 * 48, "iob")),
        ("__p___winitenv", 0, lambda a: s.pointer_to(s.env_block(True), "p_winitenv")),
        ("_get_initial_wide_environment", 0, lambda a: s.env_block(True)),
        ("__p__acmdln", 0, lambda a: s.pointer_to(s.command_line(False), "p_acmdln")),
        ("__p__wcmdln", 0, lambda a: s.pointer_to(s.command_line(True), "p_wcmdln")),
        ("_set_new_mode", 1, zero),
        ("_setusermatherr", 1, zero),
        ("__setusermatherr", 1, zero),
        ("_set_app_type", 1, zero),
        ("__set_app_type", 1, zero),
        ("_set_fmode", 1, zero),
        ("_configthreadlocale", 1, zero),
        ("_crt_atexit", 1, zero),
        ("atexit", 1, zero),
        ("_register_onexit_function", 2, zero),
        ("_initialize_onexit_table", 1, zero),
        ("_execute_onexit_table", 1, zero),
        ("_register_thread_local_exe_atexit_callback", 1, zero),
        ("_seh_filter_dll", 2, zero),
        ("_seh_filter_exe", 2, zero),
        ("_initialize_narrow_environment", 0, zero),
        ("__acrt_iob_func", 1, lambda a: s.alloc(b"\0" * 64, f"iob{a[0] & 3}")),
        ("_errno", 0, lambda a: s.alloc(b"\0" * 8, "errno")),
        ("__doserrno", 0, lambda a: s.alloc(b"\0" * 8, "doserrno")),
        ("_callnewh", 1, zero),
        ("setlocale", 2, lambda a: s.alloc(b"C\0", "locale")),
        ("_lock_file", 1, zero),
        ("_unlock_file", 1, zero),
        ("fflush", 1, zero),
        ("_isatty", 1, zero),
        ("_fileno", 1, lambda a: 1),
        ("_setmode", 2, zero),
        ("signal", 2, zero),
        ("_set_abort_behavior", 2, zero),
        ("_invalid_parameter_noinfo", 0, zero),
        ("_invalid_parameter_noinfo_noreturn", 0, zero),
        ("__std_type_info_destroy_list", 1, zero),
        ("_free_base", 1, zero),
        ("terminate", 0, zero),
    ]
    out = [(_CRT, name, argc, CDECL, fn) for name, argc, fn in crt]
    out += [
        (("comctl32",), "InitCommonControls", 0, STDCALL, zero),
        (("comctl32",), "InitCommonControlsEx", 1, STDCALL, one),
        (("kernel32",), "SetConsoleCtrlHandler", 2, STDCALL, one),
        (("kernel32",), "GetConsoleMode", 2, STDCALL, one),
        (("kernel32",), "SetConsoleMode", 2, STDCALL, one),
        (("kernel32",), "GetConsoleOutputCP", 0, STDCALL, lambda a: 437),
        (("kernel32",), "GetConsoleCP", 0, STDCALL, lambda a: 437),
        (("kernel32",), "SetConsoleTitleW", 1, STDCALL, one),
        (("kernel32",), "SetConsoleTitleA", 1, STDCALL, one),
        (("kernel32",), "FlsGetValue", 1, STDCALL, zero),
        (_DELAYLOAD, "ResolveDelayLoadedAPI", 6, STDCALL, lambda a: resolve_delay_loaded_api(s, a)),
        (("user32",), "SetProcessDPIAware", 0, STDCALL, one),
        # A service's ServiceMain registers its control handler first and gives up on failure (Speakeasy
        # answers only the older RegisterServiceCtrlHandler).
        (
            ("advapi32", "sechost"),
            "RegisterServiceCtrlHandlerExW",
            3,
            STDCALL,
            lambda a: SERVICE_STATUS_HANDLE,
        ),
        (
            ("advapi32", "sechost"),
            "RegisterServiceCtrlHandlerExA",
            3,
            STDCALL,
            lambda a: SERVICE_STATUS_HANDLE,
        ),
        # The event log: a service registers its event source at start and gives up without one.
        (("advapi32",), "RegisterEventSourceW", 2, STDCALL, lambda a: EVENT_SOURCE_HANDLE),
        (("advapi32",), "RegisterEventSourceA", 2, STDCALL, lambda a: EVENT_SOURCE_HANDLE),
        (("advapi32",), "ReportEventW", 9, STDCALL, one),
        (("advapi32",), "ReportEventA", 9, STDCALL, one),
        (("advapi32",), "DeregisterEventSource", 1, STDCALL, one),
        (("user32",), "InitCommonControls", 0, STDCALL, zero),
        (("python*",), "PyModuleDef_Init", 1, CDECL, python.module_def_init),
        (("python*",), "PyModule_Create2", 2, CDECL, python.module_create),
        (("python*",), "Py_InitModule4", 5, CDECL, python.init_module4),
        (("python*",), "Py_InitModule4_64", 5, CDECL, python.init_module4),
        (("python*",), "PyType_Ready", 1, CDECL, python.type_ready),
        (("python*",), "PyCFunction_NewEx", 3, CDECL, python.new_function),
        (("python*",), "PyCFunction_New", 2, CDECL, python.new_function),
        (("python*",), "PyCMethod_New", 4, CDECL, python.new_function),
        (("python*",), "PyImport_AddModule", 1, CDECL, python.add_module),
        (("python*",), "PyObject_GetAttrString", 2, CDECL, lambda a: python.get_attribute(a, by_string=True)),
        (("python*",), "PyObject_GetAttr", 2, CDECL, python.get_attribute),
        # "Is this module already initialised in this interpreter?"  Not in a fresh one: NULL, and the
        # module's initialisation goes on to create it (a stand-in object made it return that at once).
        (("python*",), "PyState_FindModule", 1, CDECL, zero),
        (("python*",), "PyUnicode_AsUTF8", 1, CDECL, lambda a: python.text(a, wide=False)),
        (("python*",), "PyUnicode_AsUTF8AndSize", 2, CDECL, lambda a: python.text(a, False, 1)),
        (("python*",), "PyUnicode_AsWideCharString", 2, CDECL, lambda a: python.text(a, True, 1)),
        (("python*",), "PyUnicode_AsUnicode", 1, CDECL, lambda a: python.text(a, wide=True)),
        (("python*",), "PyUnicode_AsUnicodeAndSize", 2, CDECL, lambda a: python.text(a, True, 1)),
        (("python*",), "PyString_AsString", 1, CDECL, lambda a: python.text(a, wide=False)),
        (("python*",), "PyObject_GetBuffer", 3, CDECL, python.get_buffer),
        (("python*",), "PyBytes_AsString", 1, CDECL, lambda a: python.text(a, wide=False)),
        # "Is the pending error the expected kind?"  Asked after a failure the caller can live with (an
        # AttributeError, StopIteration, KeyError): yes, so it goes on rather than giving up.
        (("python*",), "PyErr_ExceptionMatches", 1, CDECL, one),
        (("python*",), "PyErr_GivenExceptionMatches", 2, CDECL, one),
    ]
    return out


_CRT_VARIABLES = frozenset(
    ("_commode", "_fmode", "__argc", "_adjust_fdiv", "__mb_cur_max", "_acmdln", "_wcmdln", "__argv",
     "__wargv", "_environ", "_wenviron", "__initenv", "__winitenv", "_iob", "_pctype", "_ctype")
)  # fmt: skip


def _crt_variable(emu, name: str) -> int | None:
    """Storage for a C-runtime global the program imports as data; returns its address (what the
    import address table holds), or None for a name not known here."""
    ptr = emu.get_ptr_size()

    def store(data: bytes, tag: str) -> int:
        address = emu.mem_map(max(len(data), 16), tag=f"runtrace.crt.{tag}")
        emu.mem_write(address, data)
        return address

    def pointer_to(address: int) -> bytes:
        return address.to_bytes(ptr, "little")

    command_line = emu.command_line
    argc = len(startup.arguments(command_line))
    integers = {"_commode": 0, "_fmode": 0, "__argc": argc, "_adjust_fdiv": 0, "__mb_cur_max": 1}
    if name in integers:
        return store(integers[name].to_bytes(4, "little"), name)
    if name in ("_acmdln", "_wcmdln"):
        text = command_line_text(name == "_wcmdln", command_line)
        return store(pointer_to(store(text, name + ".text")), name)
    if name in ("__argv", "__wargv"):
        wide = name == "__wargv"
        array = store(startup.argv_array(0, ptr, wide, command_line), "argv")
        emu.mem_write(array, startup.argv_array(array, ptr, wide, command_line))
        return store(pointer_to(array), name)
    if name in ("_environ", "_wenviron", "__initenv", "__winitenv"):
        return store(pointer_to(store(empty_environment(ptr), "env")), name)
    if name in ("_pctype", "_ctype"):  # crtlocale.py
        table = store(crtlocale.table(), "ctype")
        return table if name == "_ctype" else store(pointer_to(table + 2), name)
    if name == "_iob":
        return store(b"\0" * 3 * 12 * ptr, name)  # stdin, stdout, stderr FILE structures
    return None


def install_crt_data() -> None:
    """Let programs built against any C-runtime DLL import its global variables (idempotent).

    Speakeasy initialises imported data only for names its handler modules declare, under their own
    module names: `msvcrt._acmdln`, and nothing for `msvcr100` and the other versioned runtimes, whose
    functions it does fold into msvcrt.  An import it does not initialise keeps the address of an API
    trampoline, so the first read of, say, `_acmdln` in a Visual C++ 2010 program's start-up faults, and
    the start-up code's exception handler ends the program.  Here every C-runtime DLL falls back to
    msvcrt's variables, and the common start-up variables (`_fmode`, `_commode`, `__argc`, `__argv`,
    `_environ`, ...) get storage of their own.  crtdll.dll folds into msvcrt (`_fold_crtdll`)."""
    from speakeasy.winenv.api.winapi import WindowsApi

    lookup = WindowsApi.get_data_export_handler
    if getattr(lookup, "runtrace_crt", False):
        return

    def get_data_export_handler(self, mod_name, exp_name):
        module, handler = lookup(self, mod_name, exp_name)
        if not handler and stdstring.data_export(None, mod_name, exp_name, probe=True):
            return module, lambda _module, _ptr: stdstring.data_export(self.emu, mod_name, exp_name)
        if handler or not any(fnmatch.fnmatch(mod_name.lower(), p) for p in _CRT):
            return module, handler
        module, handler = lookup(self, "msvcrt", exp_name)
        if handler:
            return module, handler
        if exp_name in _CRT_VARIABLES:
            return module, lambda _module, _ptr: _crt_variable(self.emu, exp_name)
        return module, None

    get_data_export_handler.runtrace_crt = True
    WindowsApi.get_data_export_handler = get_data_export_handler
    _fold_crtdll()


def _fold_crtdll() -> None:
    """Speakeasy folds every versioned C runtime into its msvcrt handlers but not crtdll.dll, the C
    runtime of Windows NT 3/95 that old MinGW programs link: their `sprintf`, `memcpy` and `rand` were
    stubs that wrote nothing (a program building its install path got an empty one).  crtdll exports the
    same C functions under the same names."""
    from speakeasy.windows import common

    normalize = common.normalize_dll_name
    if getattr(normalize, "runtrace_crtdll", False):
        return

    def normalize_dll_name(name):
        return "msvcrt" if name.lower().split(".")[0] == "crtdll" else normalize(name)

    normalize_dll_name.runtrace_crtdll = True
    common.normalize_dll_name = normalize_dll_name


def enum_resource_names(callbacks: Callbacks, emu, argv: list, ctx: dict) -> int:
    """kernel32.EnumResourceNames{A,W}: the program's callback for each resource of a type in a module.

    Wine's COM DLLs register themselves this way (DllRegisterServer enumerates their "WINE_REGISTRY"
    scripts); droppers find their payloads this way.  Speakeasy has no handler: the program got 0, "no
    such resources", and went no further."""
    module_base, resource_type, callback, param = argv[:4]
    wide = ctx.get("func_name", "").endswith("W")
    module = emu.get_mod_from_addr(module_base) if module_base else None
    directory = getattr(module, "DIRECTORY_ENTRY_RESOURCE", None)
    if directory is None or not callback:
        return 0
    if resource_type < 0x10000:  # MAKEINTRESOURCE
        matches = [e for e in directory.entries if e.name is None and e.id == resource_type]
    else:
        wanted = emu.read_mem_string(resource_type, 2 if wide else 1).lower()
        matches = [e for e in directory.entries if e.name is not None and str(e.name).lower() == wanted]
    names = [entry for m in matches if hasattr(m, "directory") for entry in m.directory.entries]

    def name_argument(entry) -> int:
        if entry.name is None:
            return entry.id
        text = (str(entry.name) + "\0").encode("utf-16-le" if wide else "latin-1", "replace")
        # (Allocated above 64 KiB, as every allocation is, memranges.py: below it a pointer would read
        # as an integer resource id.)
        address = emu.mem_map(max(len(text), 0x1000), tag="runtrace.resource_name")
        emu.mem_write(address, text)
        return address

    calls = ((module_base, resource_type, name_argument(e), param) for e in names)
    return 1 if callbacks.call(emu, callback, calls, argv) else 0


_MAX_INITIALISERS = 0x4000


def initialiser_table(emu, begin: int, end: int) -> Iterator[tuple[int, tuple]]:
    """The functions of a C-runtime initialiser table [begin, end), NULL entries skipped, each read
    when the one before has run (an initialiser may fill a later entry)."""
    ptr = emu.get_ptr_size()
    for address in range(begin, min(end, begin + _MAX_INITIALISERS * ptr), ptr):
        try:
            function = int.from_bytes(bytes(emu.mem_read(address, ptr)), "little")
        except Exception:  # an unreadable table ends it
            return
        if function:
            yield function, ()


def initterm_hook(callbacks: Callbacks, stop_on_error: bool):
    """The C runtime's `_initterm(begin, end)` and `_initterm_e(begin, end)`: call each initialiser of
    the table (a C++ program's global constructors, the runtime's own set-up); `_initterm_e` stops at
    the first that returns non-zero and returns that.  Speakeasy's handlers call none of them, so no
    global object of a C++ program was ever constructed (an MFC program's application object among
    them).  (A user32-style hook: (emu, api_name, orig, argv).)"""

    def go_on(result: int) -> bool:
        return not stop_on_error or not result & 0xFFFFFFFF

    def hook(emu, api_name, orig, argv):
        begin, end = argv[:2]
        callbacks.call_each(emu, initialiser_table(emu, begin, end), go_on)
        return 0

    return hook


STD_INPUT_HANDLE = 0xFFFFFFF6


def standard_input_hooks(stdin: startup.StandardInput) -> list[tuple[str, int, Callable]]:
    """ReadFile on the standard input handle and ReadConsole{A,W} read `startup.STDIN_TEXT`.

    Speakeasy's ReadFile fails on the console handle, so a program reading its input (a filter, a
    prompt) saw an error at once.  (user32-style hooks: (emu, api_name, orig, argv).)"""

    def deliver(emu, buffer: int, p_count: int, data: bytes, count: int) -> int:
        if data and buffer:
            emu.mem_write(buffer, data)
        if p_count:
            emu.mem_write(p_count, count.to_bytes(4, "little"))
        return 1

    def read_file(emu, api_name, orig, argv):
        handle, buffer, n, p_read = argv[:4]
        if handle != emu.get_current_process().get_std_handle(STD_INPUT_HANDLE):
            return orig(argv) if orig is not None else 0
        data = stdin.read(n)
        return deliver(emu, buffer, p_read, data, len(data))

    def read_console(emu, api_name, orig, argv):
        _, buffer, n_chars, p_read = argv[:4]
        wide = api_name.endswith("W")
        text = stdin.read(n_chars)
        data = text.decode("latin-1").encode("utf-16-le") if wide else text
        return deliver(emu, buffer, p_read, data, len(text))

    return [("ReadFile", 5, read_file), ("ReadConsoleA", 5, read_console), ("ReadConsoleW", 5, read_console)]


def _register_as_speakeasy_handler(se, module: str, name: str, argc: int, fn) -> None:
    """A handler Speakeasy files as its own (so that it leaves the API's return to the handler, which a
    callback needs); A/W variants fold into `name` as Speakeasy's do."""
    handlers = se.emu.api.load_api_handler(module)
    handlers.funcs[name] = (name, fn, argc, STDCALL, None)


def install(se, bits: int, max_methods: int = 64, seh64=None) -> Host:
    """Register the handlers on a Speakeasy instance (before run_module); returns the stub policy.

    `max_methods`: how many of a Python extension module's functions run (PythonHost); `seh64`: the
    amd64 exception dispatcher (`seh64.Seh64`), whose `Rtl*` functions are registered too."""
    scratch = _Scratch(se, bits)
    python = PythonHost(scratch, max_methods)
    api = se.emu.api

    def speakeasy_has(modules: tuple[str, ...], name: str) -> bool:
        # Speakeasy files its C-runtime handlers under msvcrt.
        return bool(api.get_export_func_handler("msvcrt" if modules is _CRT else modules[0], name)[1])

    # Speakeasy files these C-runtime functions as stdcall: on x86 its return popped the five arguments
    # the caller pops again, and a start-up function without a frame pointer returned 20 bytes off.
    crt_handlers = api.load_api_handler("msvcrt")
    for name in ("__getmainargs", "__wgetmainargs", "__p__acmdln"):
        entry = crt_handlers.funcs.get(name)
        if entry is not None:
            crt_handlers.funcs[name] = (*entry[:3], CDECL, *entry[4:])
    # Speakeasy declares these stdcall APIs with fewer arguments than they have (MoveToEx's four as
    # one), or as cdecl (the version checks, whose 64-bit condition mask is two x86 arguments, and
    # wvsprintf), so its return popped too few and the caller went on with its stack off: the only six
    # of its handlers outside the C runtime that disagree with the import libraries' sizes
    # (`stdcallargs`).  The hooks over them (versioninfo.py, crtformat.py) read the arguments as
    # declared here.
    mask_args = 4 if bits == 32 else 3
    for module, name, argc in (
        ("gdi32", "MoveToEx", 4),
        ("gdi32", "LineTo", 3),
        ("kernel32", "GetProcessHandleCount", 2),
        ("kernel32", "VerSetConditionMask", mask_args),
        ("kernel32", "VerifyVersionInfo", mask_args),
        ("user32", "wvsprintf", 3),
    ):
        entry = api.load_api_handler(module).funcs.get(name)
        if entry is not None:
            api.load_api_handler(module).funcs[name] = (entry[0], entry[1], argc, STDCALL, *entry[4:])
    callbacks = Callbacks(bits // 8)
    system = sysapi.SystemApis(se, bits // 8, callbacks)
    # Speakeasy's own handler wins where it has one, except for the overrides.
    entries = [e for e in _handlers(scratch, python) if not speakeasy_has(e[0], e[1])]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in system.simple() if not speakeasy_has(m, n)]
    missing = missingapi.MissingApis(se, bits // 8)
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in missing.simple() if not speakeasy_has(m, n)]
    pidls = shellpidl.ShellPidls(se, bits // 8, missing.csidl_path).simple()
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in pidls if not speakeasy_has(m, n)]
    stubbed_apis = stubbed.StubbedApis(se, bits // 8).simple()
    stubbed_apis += startupapis.StartupApis(se, bits // 8).simple()
    display = desktop.Desktop(se, bits // 8)
    stubbed_apis += display.simple() + secdesc.SecurityDescriptors(se, bits // 8).simple()
    stubbed_apis += shellpaths.ShellPaths(se, bits // 8).simple()
    stubbed_apis += simpleanswers.SimpleAnswers(se, bits // 8).simple() + inifiles.IniFiles(se).simple()
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in stubbed_apis if not speakeasy_has(m, n)]
    entries += _overrides(scratch, seh64) + [(m, n, c, v, _safe(f)) for m, n, c, v, f in system.overriding()]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in missing.overriding()]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in filedata.FileCopies(se).overriding()]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in display.overriding()]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in environment.Environment(se).overriding()]
    entries += [
        (m, n, c, v, _safe(f)) for m, n, c, v, f in versioninfo.VersionInfo(se, bits // 8).overriding()
    ]
    winsock = wsock32.Winsock(se)
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in winsock.overriding()]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in winsock.simple() if not speakeasy_has(m, n)]
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in regquery.RegQuery(se, bits // 8).overriding()]
    for more in (filepointer.FilePointer(se, bits // 8), ansitext.AnsiText(se, bits // 8)):
        entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in more.overriding()]
    shell_execute_ex = processes.ShellExecuteEx(se, bits // 8).simple()
    entries += [(m, n, c, v, _safe(f)) for m, n, c, v, f in shell_execute_ex if not speakeasy_has(m, n)]
    for modules, name, argc, conv, fn in entries:
        for module in modules:
            se.add_api_hook(_adapt(fn), module=module, api_name=name, argc=argc, call_conv=conv)
    se.add_api_hook(
        gui.guarded(lambda emu, api_name, func, argv: python.capsule_pointer(api_name, argv)),
        module="python*",
        api_name="PyCapsule_GetPointer",
        argc=2,
        call_conv=CDECL,
    )
    for slot, name in ((s, pycapi.slot_name("_ARRAY_API", s)) for s in pycapi.NUMPY_START_SLOTS):
        hook = lambda emu, api_name, func, argv, slot=slot: python.capsules.numpy_slot(slot)  # noqa: E731
        se.add_api_hook(hook, module="_ARRAY_API", api_name=name, argc=0, call_conv=CDECL)
    for name, fmt, first in _PY_PARSE_FUNCTIONS:
        hook = gui.guarded(_parser(python, fmt, first, "SizeT" in name))
        se.add_api_hook(hook, module="python*", api_name=name, argc=first, call_conv=CDECL)
    # The window manager's hooks wrap Speakeasy's handlers where it has them (they get the original).
    callbacks.install(se.emu)
    for module, name, argc, fn in system.redirecting():
        _register_as_speakeasy_handler(
            se,
            module,
            name,
            argc,
            lambda _handlers, emu, argv, _ctx, fn=fn: _safe(lambda a: fn(emu, a))(argv),
        )
    resources.install(se)
    enum_names = lambda _handlers, emu, argv, ctx: enum_resource_names(callbacks, emu, argv, ctx)  # noqa: E731
    _register_as_speakeasy_handler(se, "kernel32", "EnumResourceNames", 4, enum_names)
    if seh64 is not None:
        seh64.register_apis(
            lambda module, name, argc, fn: _register_as_speakeasy_handler(
                se, module, name, argc, lambda _handlers, _emu, argv, _ctx: fn(argv)
            )
        )
    for name, argc, hook in standard_input_hooks(startup.StandardInput()):
        for module in ("kernel32", "kernelbase"):
            se.add_api_hook(gui.guarded(hook), module=module, api_name=name, argc=argc, call_conv=STDCALL)
    atl.install(se, bits // 8)
    for name, stop_on_error in (("_initterm", False), ("_initterm_e", True)):
        hook = gui.guarded(initterm_hook(callbacks, stop_on_error))
        # (Not msvcrt as well as msvcr*: Speakeasy calls every hook whose pattern matches, and this one
        # must run once per call.)
        for module in ("ucrtbase", "ucrtbased", "msvcr*", "api-ms-win-crt-*"):
            se.add_api_hook(hook, module=module, api_name=name, argc=2, call_conv=CDECL)
    window_manager = gui.Gui(scratch, callbacks)
    for name, argc, hook in gui.handlers(window_manager):
        se.add_api_hook(hook, module="user32", api_name=name, argc=argc, call_conv=STDCALL)
    for name in ("CreateDialogParam", "CreateDialogIndirectParam"):
        create_dialog = lambda _handlers, emu, argv, _ctx: _safe(  # noqa: E731
            lambda a: window_manager.create_dialog(emu, a)
        )(argv)
        _register_as_speakeasy_handler(se, "user32", name, 5, create_dialog)
    # Property sheets and wizards call the pages' procedures, so they are filed as Speakeasy's own
    # comctl32 handlers (Speakeasy's comctl32 has neither API); A/W variants fold into each name.
    sheets = propsheet.PropertySheets(window_manager)
    for name, argc, fn in sheets.handlers():
        sheet_api = lambda _handlers, emu, argv, _ctx, fn=fn: _safe(lambda a: fn(emu, a))(argv)  # noqa: E731
        _register_as_speakeasy_handler(se, "comctl32", name, argc, sheet_api)
    sheet_hooks = [("PostMessageA", 4, sheets.post_message), ("PostMessageW", 4, sheets.post_message)]
    for name, argc, hook in [*sheet_hooks, ("GetParent", 1, sheets.get_parent)]:
        se.add_api_hook(gui.guarded(hook), module="user32", api_name=name, argc=argc, call_conv=STDCALL)
    for module in ("kernel32", "kernelbase"):
        se.add_api_hook(gui.guarded(filedata.write_file), module=module, api_name="WriteFile", argc=5)
    # Stand-ins for DLLs (or functions) Speakeasy lacks, with their real argument counts.
    own = mfc.MfcApplication(se, bits // 8, callbacks).handlers()
    own |= msasn1.Msasn1(se, bits // 8).handlers() | lsa.Lsa(bits // 8).handlers()
    if bits == 32:  # mfc42.dll exists for x86 only
        strings = mfcstring.CStrings(se)
        own |= strings.handlers() | cfile.CFiles(strings).handlers() | stdstring.StdStrings(se).handlers()
    return Host(python, own)


def _parser(python: PythonHost, fmt: int, first: int, ssize: bool):
    """A hook for a variadic argument parser: Speakeasy reads only the declared arguments (and raises,
    ending the run, when it cannot read one), so the outputs after them are read here, as far as the
    stack is readable."""

    def hook(emu, api_name, func, argv):
        return python.parse_arguments(
            list(argv) + variadic_arguments(emu, first, _PY_PARSE_OUTPUTS), fmt, first, ssize
        )

    return hook


def variadic_arguments(emu, start: int, count: int) -> list[int]:
    """Arguments start, start+1, ... of a cdecl call, at an API hook (the stack pointer at the return
    address; amd64: the first four are in registers, the stack has home space for them)."""
    ptr = emu.get_ptr_size()
    out = []
    for i in range(start, start + count):
        try:
            out.append(
                int.from_bytes(bytes(emu.mem_read(emu.get_stack_ptr() + ptr * (i + 1), ptr)), "little")
            )
        except Exception:
            break
    return out


def _safe(fn: Callable[[list], int]) -> Callable[[list], int]:
    """A handler whose failure (a bad pointer argument, an unreadable structure) gives the program 0,
    as a stub would, instead of ending the run."""

    def call(argv: list) -> int:
        try:
            return fn(argv)
        except Exception:
            return 0

    return call


def _adapt(fn: Callable[[list], int]):
    def hook(emu, api_name, func, argv):
        return fn(argv)

    return hook

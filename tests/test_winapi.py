"""The stand-in API handlers of winapi.py against a small fake of the Speakeasy memory interface."""

import struct

import pytest

from runtrace.trace.emulate import startup, winapi


class FakeMemory:
    """Flat memory with a bump allocator, shaped like the parts of Speakeasy the handlers use."""

    def __init__(self) -> None:
        self.mem = bytearray(0x40000)
        self.top = 0x1000
        self.procs: list[tuple[str, str]] = []
        self.runs = []
        self.emu = self
        self.command_line = startup.COMMAND_LINE  # Speakeasy's emulator keeps its configuration's

    def mem_alloc(self, size: int, tag: str = "") -> int:
        addr, self.top = self.top, self.top + ((size + 0xFFF) & ~0xFFF)
        return addr

    def mem_write(self, addr: int, data: bytes) -> None:
        self.mem[addr : addr + len(data)] = data

    def mem_read(self, addr: int, size: int) -> bytes:
        return bytes(self.mem[addr : addr + size])

    def read_mem_string(self, addr: int, width: int) -> str:
        return self.mem[addr : self.mem.index(0, addr)].decode()

    def get_proc(self, module: str, name: str) -> int:
        self.procs.append((module, name))
        return 0xFEEE0000 + len(self.procs)

    def add_run(self, run) -> None:
        self.runs.append(run)


@pytest.fixture(params=[32, 64])
def host(request):
    memory = FakeMemory()
    scratch = winapi._Scratch(memory, request.param)
    return memory, scratch, winapi.PythonHost(scratch)


def test_python_objects_are_distinct_live_and_typed(host):
    memory, scratch, python = host
    a, b = python.value("PyUnicode_FromString"), python.value("PyModule_Create2")
    assert a and b and a != b
    ptr = scratch.ptr
    refcount = int.from_bytes(memory.mem_read(a, ptr), "little")
    type_obj = int.from_bytes(memory.mem_read(a + ptr, ptr), "little")
    assert refcount >= 1 << 20  # Py_DECREF never frees it
    assert type_obj and int.from_bytes(memory.mem_read(type_obj, ptr), "little") >= 1 << 20


def test_python_status_and_truth_calls(host):
    _, _, python = host
    assert python.value("PyModule_AddIntConstant") == 0
    assert python.value("PyType_Ready") == 0
    assert python.value("PyErr_Occurred") == 0  # no error pending
    assert python.value("PyArg_ParseTuple") == 1
    assert winapi.Host(python).stub_value(None, "KERNEL32", "Frobnicate") == 0
    assert winapi.Host(python).stub_value(None, "python311", "PyLong_FromLong") != 0


def test_module_def_init_queues_exec_slots_only(host):
    memory, scratch, python = host
    ptr = scratch.ptr
    definition, slots = memory.mem_alloc(0x100), memory.mem_alloc(0x100)
    memory.mem_write(definition + 9 * ptr, slots.to_bytes(ptr, "little"))
    entries = [(1, 0x4010), (2, 0x4020), (2, 0x4030), (0, 0)]  # create, exec, exec, end
    for i, (kind, fn) in enumerate(entries):
        memory.mem_write(
            slots + i * 2 * ptr, kind.to_bytes(4, "little").ljust(ptr, b"\0") + fn.to_bytes(ptr, "little")
        )
    assert python.module_def_init([definition]) == definition
    assert [r.start_addr for r in memory.runs] == [0x4020, 0x4030]
    assert all(r.type.startswith("python.mod_exec_") and len(r.args) == 1 for r in memory.runs)


def test_module_def_init_survives_an_unreadable_definition(host):
    memory, _, python = host
    assert python.module_def_init([0x10_0000_0000]) == 0x10_0000_0000  # outside memory: nothing queued
    assert memory.runs == []


@pytest.mark.parametrize("bits", [32, 64])
def test_resolve_delay_loaded_api_binds_by_name_and_ordinal(bits):
    memory = FakeMemory()
    scratch = winapi._Scratch(memory, bits)
    ptr = bits // 8
    base, desc = 0x10000, 0x10100
    dll_rva, iat_rva, int_rva, name_rva = 0x200, 0x300, 0x400, 0x500
    memory.mem_write(desc, struct.pack("<5I", 1, dll_rva, 0x180, iat_rva, int_rva))
    memory.mem_write(base + dll_rva, b"SHELL32.dll\0")
    memory.mem_write(base + name_rva, b"\0\0ShellExecuteW\0")
    memory.mem_write(base + int_rva, name_rva.to_bytes(ptr, "little"))
    memory.mem_write(base + int_rva + ptr, ((1 << (bits - 1)) | 42).to_bytes(ptr, "little"))

    first = winapi.resolve_delay_loaded_api(scratch, [base, desc, 0, 0, base + iat_rva, 0])
    second = winapi.resolve_delay_loaded_api(scratch, [base, desc, 0, 0, base + iat_rva + ptr, 0])
    assert memory.procs == [("shell32", "ShellExecuteW"), ("shell32", "ordinal_42")]
    assert int.from_bytes(memory.mem_read(base + iat_rva, ptr), "little") == first  # the thunk is bound
    assert int.from_bytes(memory.mem_read(base + iat_rva + ptr, ptr), "little") == second


def test_resolve_delay_loaded_api_with_a_bad_descriptor_returns_zero():
    scratch = winapi._Scratch(FakeMemory(), 32)
    assert winapi.resolve_delay_loaded_api(scratch, [0, 0x10_0000_0000, 0, 0, 0, 0]) == 0


class FakeEmulator:
    def __init__(self, handled: bool) -> None:
        self.handled = handled
        self.dispatched: list[int] = []
        self.exited = False
        self.curr_run = type("Run", (), {"error": {}})()

    def dispatch_seh(self, code: int) -> bool:
        self.dispatched.append(code)
        return self.handled

    def get_ret_address(self) -> int:
        return 0x401234

    def get_error_info(self, desc: str, address: int) -> dict:
        return {"type": desc, "pc": "0xfeedf010", "address": hex(address)}

    def exit_process(self) -> None:
        self.exited = True


@pytest.mark.parametrize("handled", [True, False])
def test_raise_exception_goes_to_handlers_or_ends_the_entry_point(handled):
    memory = FakeMemory()
    memory.emu = emulator = FakeEmulator(handled)
    scratch = winapi._Scratch(memory, 32)
    assert winapi.raise_exception(scratch, [0x80000100, 1, 0, 0]) == 0
    assert emulator.dispatched == [0x80000100]
    assert emulator.exited is not handled
    if not handled:  # the run's error names the code and the caller, not the API hook address
        assert emulator.curr_run.error["type"] == "unhandled_exception 0x80000100"
        assert emulator.curr_run.error["pc"] == "0x401234"


class CrtEmulator(FakeMemory):
    """The emulator-side allocation interface `_crt_variable` uses."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def get_ptr_size(self) -> int:
        return self.bits // 8

    def mem_map(self, size: int, tag: str = "") -> int:
        return self.mem_alloc(size, tag)


@pytest.mark.parametrize("bits", [32, 64])
def test_crt_variables_have_storage_of_the_right_shape(bits):
    emu, ptr = CrtEmulator(bits), bits // 8

    def deref(address: int) -> int:
        return int.from_bytes(emu.mem_read(address, ptr), "little")

    assert int.from_bytes(emu.mem_read(winapi._crt_variable(emu, "__argc"), 4), "little") == 2
    assert int.from_bytes(emu.mem_read(winapi._crt_variable(emu, "_fmode"), 4), "little") == 0
    assert emu.read_mem_string(deref(winapi._crt_variable(emu, "_acmdln")), 1) == startup.COMMAND_LINE
    argv = deref(winapi._crt_variable(emu, "__argv"))
    assert emu.read_mem_string(deref(argv), 1) == startup.PROGRAM
    assert emu.read_mem_string(deref(argv + ptr), 1) == startup.DOCUMENT and deref(argv + 2 * ptr) == 0
    wide = deref(winapi._crt_variable(emu, "_wcmdln"))
    assert emu.mem_read(wide, 6) == "C:\\".encode("utf-16-le")
    assert deref(deref(winapi._crt_variable(emu, "_environ"))) == 0  # an empty environment
    assert winapi._crt_variable(emu, "_not_a_crt_variable") is None


def test_versioned_crt_dlls_fall_back_to_msvcrt_data_and_to_runtrace_storage():
    from speakeasy.winenv.api.winapi import WindowsApi

    winapi.install_crt_data()
    winapi.install_crt_data()  # idempotent
    handler = WindowsApi.get_data_export_handler
    assert handler.runtrace_crt

    class Api:
        emu = CrtEmulator(32)
        mods = {}

        def load_api_handler(self, name):
            return None  # no Speakeasy handler module for any DLL: only runtrace's storage answers

    api = Api()
    _, fn = handler(api, "MSVCR100", "_commode")
    assert fn is not None and fn(None, 0) >= 0x1000
    assert handler(api, "MSVCR100", "printf")[1] is None  # a function, not a variable
    assert handler(api, "KERNEL32", "_commode")[1] is None  # not a C runtime


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("wide", [False, True])
def test_getmainargs_writes_argc_argv_and_environment(bits, wide):
    mem, ptr = FakeMemory(), bits // 8
    scratch = winapi._Scratch(mem, bits)
    out = mem.mem_alloc(3 * 8)
    assert winapi.get_main_args(scratch, [out, out + 8, out + 16, 0, 0], wide) == 0

    def deref(address: int, size: int = ptr) -> int:
        return int.from_bytes(mem.mem_read(address, size), "little")

    assert deref(out, 4) == len(startup.ARGV) == 2
    argv = deref(out + 8)
    for i, arg in enumerate(startup.ARGV):
        text = startup.encode(arg, wide)
        assert mem.mem_read(deref(argv + i * ptr), len(text)) == text
    assert deref(argv + 2 * ptr) == 0
    assert deref(deref(out + 16)) == 0  # an empty environment


class ConsoleEmu(FakeMemory):
    class Process:
        def get_std_handle(self, which: int) -> int:
            return 0xF001 if which == winapi.STD_INPUT_HANDLE else 0

    def get_current_process(self):
        return self.Process()


def test_standard_input_is_read_in_order_then_end_of_file():
    emu = ConsoleEmu()
    hooks = {name: hook for name, _, hook in winapi.standard_input_hooks(startup.StandardInput())}
    buf, count = emu.mem_alloc(64), emu.mem_alloc(8)
    assert hooks["ReadFile"](emu, "kernel32.ReadFile", None, [0xF001, buf, 5, count, 0]) == 1
    assert emu.mem_read(buf, 5) == startup.STDIN_TEXT[:5] and emu.mem_read(count, 4) == (5).to_bytes(
        4, "little"
    )
    assert hooks["ReadConsoleW"](emu, "kernel32.ReadConsoleW", None, [0xF001, buf, 64, count, 0]) == 1
    rest = startup.STDIN_TEXT[5:]
    assert emu.mem_read(buf, 2 * len(rest)) == rest.decode().encode("utf-16-le")
    assert hooks["ReadFile"](emu, "kernel32.ReadFile", None, [0xF001, buf, 5, count, 0]) == 1
    assert emu.mem_read(count, 4) == b"\0\0\0\0"  # end of file
    # Any other handle goes to Speakeasy's own ReadFile.
    assert hooks["ReadFile"](emu, "kernel32.ReadFile", lambda argv: 7, [0x1234, buf, 5, count, 0]) == 7


class RegisterEmu(FakeMemory):
    def __init__(self, ptr: int) -> None:
        super().__init__()
        self.ptr, self.regs, self.sp = ptr, {}, 0x2000

    def get_ptr_size(self) -> int:
        return self.ptr

    def reg_read(self, reg) -> int:
        return self.regs[reg]

    def get_stack_ptr(self) -> int:
        return self.sp


def test_stubbed_cpp_stream_operators_return_their_stream():
    from speakeasy.winenv import arch as se_arch

    host = winapi.Host(winapi.PythonHost(winapi._Scratch(FakeMemory(), 32)))
    x86 = RegisterEmu(4)
    x86.regs[se_arch.X86_REG_ECX] = 0x7000  # `this` of a member operator (thiscall)
    x86.mem_write(x86.sp + 4, (0x6000).to_bytes(4, "little"))  # the first stack argument
    free_operator = "??6std@@YAAAV?$basic_ostream@DU?$char_traits@D@std@@@0@AAV10@PBD@Z"
    member_operator = "??6?$basic_ostream@DU?$char_traits@D@std@@@std@@QAEAAV01@H@Z"
    assert host.stub_value(x86, "MSVCP60", free_operator) == 0x6000
    assert host.stub_value(x86, "msvcp140", member_operator) == 0x7000
    assert (
        host.stub_value(x86, "MSVCP60", "?endl@std@@YAAAV?$basic_ostream@DU?$char_traits@D@std@@@1@AAV21@@Z")
        == 0x6000
    )
    amd64 = RegisterEmu(8)
    amd64.regs[se_arch.AMD64_REG_RCX] = 0x140008000
    assert host.stub_value(amd64, "MSVCP140", member_operator) == 0x140008000
    assert host.stub_value(x86, "MSVCP60", "?sync_with_stdio@ios_base@std@@SA_N_N@Z") == 0  # not a stream op


def _word(memory, address, ptr):
    return int.from_bytes(memory.mem_read(address, ptr), "little")


def test_python_objects_read_as_ready_types_of_a_large_size(host):
    # Cython's __Pyx_ImportType checks that what a module attribute lookup returned is a type
    # (Py_TYPE(o)->tp_flags & Py_TPFLAGS_TYPE_SUBCLASS) and that its tp_basicsize is at least the size
    # compiled in; zeroed stand-ins failed both and every Cython module stopped in its initialisation.
    memory, scratch, python = host
    ptr = scratch.ptr
    obj = python.value("PyObject_GetAttrString")
    type_obj = _word(memory, obj + ptr, ptr)
    assert _word(memory, type_obj + ptr, ptr) == type_obj  # the type's type is itself (like `type`)
    for o in (obj, type_obj):
        flags = int.from_bytes(memory.mem_read(o + winapi._TP_FLAGS * ptr, 4), "little")
        assert flags & (1 << 31) and flags & (1 << 12)  # TYPE_SUBCLASS, READY
        assert _word(memory, o + winapi._TP_BASICSIZE * ptr, ptr) >= 0x1000
        assert memory.read_mem_string(_word(memory, o + winapi._TP_NAME * ptr, ptr), 1) == "object"


def _method_table(memory, ptr, entries):
    table, names = memory.mem_alloc(0x100), memory.mem_alloc(0x100)
    for i, (name, function, flags) in enumerate(entries):
        memory.mem_write(names + 16 * i, name.encode() + b"\0")
        row = (names + 16 * i).to_bytes(ptr, "little") + function.to_bytes(ptr, "little")
        memory.mem_write(table + 4 * ptr * i, row + flags.to_bytes(4, "little"))
    return table  # the row after the last is zeroed: the NULL terminator


def test_module_functions_run_after_the_exports_with_arguments_per_calling_convention(host):
    memory, scratch, python = host
    ptr = scratch.ptr
    table = _method_table(memory, ptr, [("noargs", 0x4010, 0x4), ("one", 0x4020, 0x8),
                                        ("fast", 0x4030, 0x80), ("varargs", 0x4040, 0x1)])  # fmt: skip
    definition = memory.mem_alloc(0x100)
    memory.mem_write(definition + winapi._DEF_METHODS * ptr, table.to_bytes(ptr, "little"))
    module = python.module_create([definition, 1013])
    assert module
    runs = {r.type: r for r in memory.runs}
    assert list(runs) == [f"python.function.{n}" for n in ("noargs", "one", "fast", "varargs")]
    assert [r.start_addr for r in memory.runs] == [0x4010, 0x4020, 0x4030, 0x4040]
    assert runs["python.function.noargs"].args[1] == 0  # METH_NOARGS: (self, NULL)
    assert runs["python.function.one"].args[1] != 0  # METH_O: (self, object)
    fast = runs["python.function.fast"].args  # METH_FASTCALL: (self, args array, nargs, kwnames)
    assert fast[2] == 1 and _word(memory, fast[1], ptr) != 0 and fast[3] == 0
    assert len(runs["python.function.varargs"].args) == 3  # (self, args tuple, kwargs)
    # The same table again (PyType_Ready of a type sharing it, a second module): queued once.
    python.init_module4([0, table, 0, 0, 1013])
    assert len(memory.runs) == 4


def test_module_functions_are_capped_and_new_function_objects_queue_theirs(host):
    memory, scratch, python = host
    python.max_methods = 2
    table = _method_table(memory, scratch.ptr, [(f"f{i}", 0x5000 + i, 0x4) for i in range(5)])
    python.queue_methods(table)
    assert [r.start_addr for r in memory.runs] == [0x5000, 0x5001]
    python.max_methods = 3
    assert python.new_function([table + 4 * scratch.ptr * 4, 0, 0])  # PyCFunction_NewEx(&defs[4], ...)
    assert [r.start_addr for r in memory.runs] == [0x5000, 0x5001, 0x5004]


def test_add_module_of_a_new_name_is_empty_and_ours_are_not(host):
    # Cython keeps its shared types on a module named after its ABI and creates them there when the
    # attribute lookup fails; a found stand-in "type" has the wrong size and the module gave up.
    memory, _, python = host
    memory.mem_write(0x30000, b"_cython_3_0_11\0builtins\0")
    fresh, builtins = python.add_module([0x30000]), python.add_module([0x3000F])
    assert fresh != builtins
    assert python.get_attribute([fresh, 0x30000]) == 0  # AttributeError
    assert python.get_attribute([builtins, 0x30000]) != 0
    assert python.add_module([0x30000]) == fresh


@pytest.mark.parametrize(
    ("fmt", "kinds"),
    [
        ("O|i:name", ["object", 4]),
        ("s#|nO!;message with s and i", ["text", "length", "ssize", "skip", "object"]),
        ("(ii)dD", [4, 4, "double", "complex"]),
        ("O&y*es#Zk", ["skip", "skip", "buffer", "skip", "text", "length", "wide_text", 4]),
        ("", []),
    ],
)
def test_argument_formats_give_one_output_kind_per_variadic_argument(fmt, kinds):
    from runtrace.trace.emulate import pyargs

    assert pyargs.output_kinds(fmt) == kinds


def test_parse_arguments_stores_plausible_values_through_the_outputs(host):
    memory, scratch, python = host
    ptr = scratch.ptr
    memory.mem_write(0x30000, b"Os#id|O&:f\0")
    # &obj, &text, &length, &int, &double, then O&'s converter and its output: neither is touched.
    outputs = [0x31000 + 0x10 * i for i in range(5)] + [0x31800, 0x31900]
    assert python.parse_arguments([0, 0x30000, *outputs], 1, 2, ssize_lengths=True) == 1
    obj, text, length = (_word(memory, a, ptr) for a in outputs[:3])
    assert int.from_bytes(memory.mem_read(obj, ptr), "little") >= 1 << 20  # a live stand-in object
    assert memory.read_mem_string(text, 1) == startup.DOCUMENT
    assert length == len(startup.DOCUMENT)
    assert int.from_bytes(memory.mem_read(outputs[3], 4), "little") == 1
    assert struct.unpack("<d", memory.mem_read(outputs[4], 8)) == (1.0,)
    assert memory.mem_read(0x31800, 0x200) == bytes(0x200)

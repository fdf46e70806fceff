"""The stand-in window manager (trace/emulate/gui.py) against a small fake of the Speakeasy emulator."""

import struct
from types import SimpleNamespace

import pytest
from speakeasy.winenv import arch as se_arch

from conftest import SAMPLES_ZIP, needs_shared
from emu_pe import Data, Text, Word, calls
from runtrace.trace.emulate import gui, winapi
from runtrace.trace.emulate.callbacks import CALLBACK_RETURN, Callbacks
from runtrace.trace.emulate.emulator import emulate
from test_winapi import FakeMemory

WNDPROC = 0x401230
STACK = 0x30000 - 0x108  # what the stack pointer is when the program's call reaches the API
CALLER = 0x401500  # the return address the API would return to


class FakeRun:
    def __init__(self) -> None:
        self.api_callbacks = []


class FakeEmu(FakeMemory):
    """Adds registers, a stack and Speakeasy's function-call helpers (same semantics, smaller)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.top = 0x10000  # below are atoms (MAKEINTATOM), not addresses
        self.ptr = bits // 8
        self.regs: dict[str, int] = {"sp": STACK, "pc": 0xFEEDF074}
        self.run = FakeRun()
        self.write_ptr(STACK, CALLER)
        self.unset = 0

    def write_ptr(self, addr: int, value: int) -> None:
        self.mem_write(addr, value.to_bytes(self.ptr, "little"))

    def read_ptr(self, addr: int) -> int:
        return int.from_bytes(self.mem_read(addr, self.ptr), "little")

    def get_current_run(self):
        return self.run

    def get_ret_address(self) -> int:
        return self.read_ptr(self.regs["sp"])

    def get_stack_ptr(self) -> int:
        return self.regs["sp"]

    def set_pc(self, pc: int) -> None:
        self.regs["pc"] = pc

    def reg_write(self, reg, value: int) -> None:
        self.regs["sp" if reg in (se_arch.X86_REG_ESP, se_arch.AMD64_REG_RSP) else reg] = value

    def reg_read(self, reg) -> int:
        return self.regs.get(reg, 0)

    def set_func_args(self, stack_addr: int, ret_addr: int, *args: int) -> None:
        sp = stack_addr - self.ptr
        stacked = list(args)
        if self.ptr == 8:  # the first four in registers, then home space
            self.regs.update(zip(("rcx", "rdx", "r8", "r9"), args[:4], strict=False))
            stacked, sp = list(args[4:]), sp - 0x20
        for arg in reversed(stacked):
            self.write_ptr(sp, arg)
            sp -= self.ptr
        self.write_ptr(sp, ret_addr)
        self.regs["sp"] = sp

    def _unset_emu_hooks(self) -> None:
        self.unset += 1

    def _handle_invalid_fetch(self, uc, address, size, value, ctx) -> bool:
        return False  # Speakeasy's own handling of any other address


@pytest.fixture(params=[32, 64])
def env(request):
    emu = FakeEmu(request.param)
    callbacks = Callbacks(request.param // 8)
    callbacks.install(emu)
    window_manager = gui.Gui(winapi._Scratch(emu, request.param), callbacks)
    return emu, window_manager


def _wide(emu: FakeEmu, text: str) -> int:
    addr = emu.mem_alloc(64)
    emu.mem_write(addr, text.encode() + b"\0")  # FakeMemory reads strings one byte per character
    return addr


def _wndclassex(emu: FakeEmu, name: int, wndproc: int = WNDPROC) -> int:
    addr = emu.mem_alloc(0x100)
    if emu.ptr == 4:
        emu.mem_write(addr, struct.pack("<3I", 48, 0, wndproc))
        emu.write_ptr(addr + 40, name)
    else:
        emu.mem_write(addr, struct.pack("<IIQ", 80, 0, wndproc))
        emu.write_ptr(addr + 64, name)
    return addr


def _create_args(class_arg: int, param: int = 0x5150) -> list[int]:
    return [0, class_arg, 0, 0x10CF0000, 0, 0, 300, 200, 0, 0, 0x400000, param]


def _messages(emu: FakeEmu, wm: gui.Gui, limit: int = 20) -> list[tuple[int, int, int, int]]:
    msg = emu.mem_alloc(64)
    out = []
    for _ in range(limit):
        more = wm.get_message(emu, "USER32.GetMessageW", None, [msg, 0, 0, 0])
        out.append(wm._read_msg(emu, msg))
        if not more:
            break
    return out


def test_a_window_of_a_registered_class_lives_through_its_message_loop(env):
    emu, wm = env
    name = _wide(emu, "MainWnd")
    atom = wm.register_class(emu, "USER32.RegisterClassExW", lambda argv: 0xC123, [_wndclassex(emu, name)])
    assert atom == 0xC123 and wm.procedures == {0xC123: WNDPROC, "mainwnd": WNDPROC}
    hwnd = wm.create_window(emu, "USER32.CreateWindowExW", None, _create_args(_wide(emu, "MAINWND")))
    messages = _messages(emu, wm)
    assert [m[1] for m in messages] == [
        gui.WM_CREATE, gui.WM_SHOWWINDOW, gui.WM_SIZE, gui.WM_PAINT, gui.WM_TIMER, gui.WM_COMMAND,
        gui.WM_CLOSE, gui.WM_DESTROY, gui.WM_QUIT,
    ]  # fmt: skip
    assert all(m[0] == hwnd for m in messages[:-1])
    create_struct = messages[0][3]
    assert emu.read_ptr(create_struct) == 0x5150  # lpCreateParams, as the procedure reads it
    # The loop is over: GetMessage is Speakeasy's again (here: no handler, so "no message").
    assert wm.get_message(emu, "USER32.GetMessageW", None, [emu.mem_alloc(64), 0, 0, 0]) == 0


def test_windows_of_unknown_classes_and_atoms(env):
    emu, wm = env
    wm.register_class(emu, "USER32.RegisterClassW", None, [emu.mem_alloc(0x100)])  # no procedure
    assert wm.create_window(emu, "USER32.CreateWindowExA", None, _create_args(_wide(emu, "BUTTON")))
    assert not wm.script
    atom = wm.register_class(emu, "USER32.RegisterClassExA", None, [_wndclassex(emu, 0xC0DE)])
    wm.create_window(emu, "USER32.CreateWindowExA", None, _create_args(atom))
    assert [m[1] for m in _messages(emu, wm)][0] == gui.WM_CREATE


def test_dispatch_calls_the_procedure_and_returns_to_the_caller_with_its_stack_restored(env):
    emu, wm = env
    wm.windows[0xA10004] = WNDPROC
    msg = emu.mem_alloc(64)
    wm._write_msg(emu, msg, 0xA10004, gui.WM_PAINT, 7, 9)
    assert wm.dispatch_message(emu, "USER32.DispatchMessageW", lambda argv: 0, [msg]) == 0
    assert emu.regs["pc"] == WNDPROC
    sp = emu.regs["sp"]
    assert emu.read_ptr(sp) == CALLBACK_RETURN
    if emu.ptr == 4:  # stdcall: the arguments on the stack
        assert [emu.read_ptr(sp + 4 * i) for i in (1, 2, 3, 4)] == [0xA10004, gui.WM_PAINT, 7, 9]
    else:  # the first four in registers; the stack 16-byte aligned at the call; home space above
        assert [emu.regs[r] for r in ("rcx", "rdx", "r8", "r9")] == [0xA10004, gui.WM_PAINT, 7, 9]
        assert sp % 16 == 8 and sp + 8 + 0x20 <= STACK
    assert emu.read_ptr(STACK) == CALLER  # the program's own frame is untouched

    # The procedure returns to CALLBACK_RETURN: DispatchMessage then returns to the program.
    emu.regs["sp"] = sp + emu.ptr
    assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})
    assert emu.regs["pc"] == CALLER
    assert emu.regs["sp"] == STACK + emu.ptr + (4 if emu.ptr == 4 else 0)  # stdcall pops lpMsg on x86
    assert emu.unset == 1
    assert not emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})  # nothing pending now


def test_modal_dialogs_get_wm_initdialog_and_messages_for_other_windows_go_to_speakeasy(env):
    emu, wm = env
    args = [0x400000, 0x65, 0, 0x402000, 0x77]
    assert wm.dialog_box(emu, "USER32.DialogBoxParamW", lambda argv: 0, args) == 0
    assert emu.regs["pc"] == 0x402000
    message = lambda: emu.read_ptr(emu.regs["sp"] + 4 * 2) if emu.ptr == 4 else emu.regs["rdx"]  # noqa: E731
    assert message() == gui.WM_INITDIALOG
    # WM_INITDIALOG returns FALSE ("I set the focus myself"): the dialog runs on, the OK button's
    # WM_COMMAND follows.
    emu.regs[se_arch.AMD64_REG_RAX if emu.ptr == 8 else se_arch.X86_REG_EAX] = 0
    emu.regs["sp"] += emu.ptr
    assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})
    assert emu.regs["pc"] == 0x402000 and message() == gui.WM_COMMAND
    # DialogBoxIndirectParam has no Speakeasy handler to return through: no call, the dialog says IDOK.
    assert wm.dialog_box(emu, "USER32.DialogBoxIndirectParamW", None, args) == 1
    msg = emu.mem_alloc(64)
    wm._write_msg(emu, msg, 0xBAD, gui.WM_PAINT, 0, 0)
    assert wm.dispatch_message(emu, "USER32.DispatchMessageW", lambda argv: 42, [msg]) == 42


def test_a_modeless_dialog_gets_wm_initdialog_and_its_creator_gets_the_dialog(env):
    emu, wm = env
    args = [0x400000, 0x66, 0xA10004, 0x402000, 0x77]  # hInstance, template, parent, procedure, param
    hdlg = wm.create_dialog(emu, args)
    assert hdlg and wm.windows[hdlg] == 0x402000  # later SendMessage/DispatchMessage reach it
    assert emu.regs["pc"] == 0x402000
    if emu.ptr == 4:
        sp = emu.regs["sp"]
        assert [emu.read_ptr(sp + 4 * i) for i in (1, 2, 3, 4)] == [hdlg, gui.WM_INITDIALOG, 0, 0x77]
    else:
        assert [emu.regs[r] for r in ("rcx", "rdx", "r8", "r9")] == [hdlg, gui.WM_INITDIALOG, 0, 0x77]
    # The procedure answers FALSE; CreateDialogParam still returns the dialog, to the program's caller.
    result_reg = se_arch.AMD64_REG_RAX if emu.ptr == 8 else se_arch.X86_REG_EAX
    emu.regs[result_reg] = 0
    emu.regs["sp"] += emu.ptr
    assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})
    assert emu.regs["pc"] == CALLER and emu.regs[result_reg] == hdlg
    assert emu.regs["sp"] == STACK + emu.ptr + (4 * 5 if emu.ptr == 4 else 0)  # stdcall pops five on x86
    # Without a procedure there is nothing to call: the handle comes back at once.
    assert wm.create_dialog(emu, [0x400000, 0x66, 0, 0, 0]) not in (0, hdlg)


def test_a_failing_hook_gives_the_program_zero_instead_of_ending_the_run(env):
    emu, wm = env
    hooks = {name: hook for name, _, hook in gui.handlers(wm)}
    assert {"GetMessageA", "GetMessageW", "RegisterClassW", "DialogBoxParamA"} <= set(hooks)

    def broken(argv):
        raise RuntimeError("Speakeasy's handler failed")

    assert hooks["CreateWindowExW"](emu, "USER32.CreateWindowExW", broken, _create_args(0x20000)) == 0


def _capa(sha: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(SAMPLES_ZIP) as z:
        z.setpassword(b"infected")
        (member,) = [n for n in z.namelist() if n.startswith(sha[:12])]
        return z.read(member)


def _calls(trace) -> list[str]:
    return [c.name.split(".", 1)[1] for c in sorted(trace.api_calls, key=lambda c: c.position)]


@needs_shared
def test_keyloggers_window_procedures_run_and_return():
    # A raw-input keylogger from the capa corpus: it registers for keyboard input in WM_CREATE.
    # Before the window manager, its message loop ended at once and its procedure never ran.
    from runtrace.trace.emulate.emulator import TracerSettings, emulate
    from runtrace.trace.model import StopReason

    sha = "9b973595dc916f211ac854153a3830e1d6ccd1aa1890c46200234fb6aa0ac676"
    trace = emulate(_capa(sha), sha, "keylogger", TracerSettings(timeout_s=30))
    calls = _calls(trace)
    first = next(i for i, name in enumerate(calls) if name.startswith("DispatchMessage"))
    assert trace.meta.arch.value == "amd64"
    assert calls[first + 1] == "RegisterRawInputDevices"  # its WM_CREATE handler
    assert trace.meta.stop_reason is StopReason.EXITED  # the procedures returned to the message loop


@needs_shared
def test_a_keylogger_formatting_its_server_name_gets_to_its_network_loop():
    # The x86 sibling of the keylogger above formats its server's name with _vsnprintf.  With
    # Speakeasy's formatter (tracer revision 8) the name was garbage, the connection failed and the
    # program went on to its window; with real formatting it resolves the name and stays in its
    # receive loop (select / recv / reconnect).  Before it, it computes a cipher's tables: about
    # 250,000 instructions that ran in blocks without a block hook, unrecorded and uncounted, until
    # tracer revision 13.
    from runtrace.trace.emulate.emulator import TracerSettings, emulate

    sha = "dbef9d81aa5c47e97f966034dacd991039376aeb179a0df12e82a7e4f6179c34"
    calls = _calls(
        emulate(_capa(sha), sha, "keylogger", TracerSettings(max_instructions=1_000_000, timeout_s=600))
    )
    assert "gethostbyname" in calls
    assert calls.count("recv") >= 10 and calls.count("select") >= 10


def _resources(type_name: str, names: list) -> SimpleNamespace:
    entries = [SimpleNamespace(name=n if isinstance(n, str) else None, id=n if isinstance(n, int) else None)
               for n in names]  # fmt: skip
    directory = SimpleNamespace(entries=entries)
    return SimpleNamespace(entries=[SimpleNamespace(name=type_name, id=None, directory=directory)])


@pytest.mark.parametrize("bits", [32, 64])
def test_enum_resource_names_calls_back_for_each_name_until_asked_to_stop(bits):
    emu = FakeEmu(bits)
    emu.module = SimpleNamespace(
        DIRECTORY_ENTRY_RESOURCE=_resources("WINE_REGISTRY", ["FIRST_RGS", 7, "LAST"])
    )
    emu.get_mod_from_addr = lambda address: emu.module if address == 0x400000 else None
    emu.mem_map = lambda size, base=None, tag="": emu.mem_alloc(size, tag)
    callbacks = Callbacks(bits // 8)
    callbacks.install(emu)
    result = {32: se_arch.X86_REG_EAX, 64: se_arch.AMD64_REG_RAX}[bits]
    argv = [0x400000, _wide(emu, "wine_registry"), 0x401800, 0x99]

    def callee_args() -> tuple[int, int, int, int]:
        if bits == 32:
            return tuple(emu.read_ptr(emu.regs["sp"] + 4 * i) for i in (1, 2, 3, 4))
        return tuple(emu.regs[r] for r in ("rcx", "rdx", "r8", "r9"))

    ctx = {"func_name": "kernel32.EnumResourceNamesW"}
    assert winapi.enum_resource_names(callbacks, emu, argv, ctx) == 1
    seen = []
    for answer in (1, 0):  # TRUE: go on; FALSE: stop before the third name
        assert emu.regs["pc"] == 0x401800
        module, rtype, name, param = callee_args()
        assert (module, rtype, param) == (0x400000, argv[1], 0x99)
        seen.append(name if name < 0x10000 else emu.mem_read(name, 20).decode("utf-16-le"))
        emu.regs["sp"] += emu.ptr  # the callee returns
        emu.regs[result] = answer
        assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})
    assert seen == ["FIRST_RGS\0", 7]  # a wide string (EnumResourceNamesW), then an integer id
    assert emu.regs["pc"] == CALLER and emu.regs["sp"] == STACK + emu.ptr + (16 if bits == 32 else 0)
    # No resources of the type, or no callback: FALSE at once, nothing called.
    assert winapi.enum_resource_names(callbacks, emu, [0x400000, 3, 0x401800, 0], ctx) == 0


def test_create_dialog_param_in_an_emulated_program_runs_the_procedure_and_returns_the_dialog():
    def procedure(lay) -> bytes:  # DLGPROC(hwnd, message, wParam, lParam), stdcall
        sleep = struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))
        return (
            b"\xff\x74\x24\x08"  # push dword [esp+8]   (the message)
            + b"\xff\x15" + sleep  # call [Sleep]
            + b"\xff\x74\x24\x10"  # push dword [esp+16]  (lParam: the creator's dwInitParam)
            + b"\xff\x15" + sleep  # call [Sleep]
            + b"\x31\xc0"  # xor eax, eax          (FALSE: "I set the focus")
            + b"\xc2\x10\x00"  # ret 16
        )  # fmt: skip

    program = calls(
        [
            ("user32.dll!CreateDialogParamW", [0x400000, 0x66, 0, Text(0x800), 0x77], Data(0)),
            ("kernel32.dll!Sleep", [Word(0)]),  # the dialog handle the program got
        ],
        code_at={0x800: procedure},
        extra_imports=("kernel32.dll!Sleep",),
    )
    trace = emulate(program, "x", "dialog")
    assert trace.meta.stop_reason.value == "exited", trace.meta.stop_detail
    sleeps = [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]
    dialog = next(c.result for c in trace.api_calls if c.name.endswith("CreateDialogParamW"))
    assert sleeps == [gui.WM_INITDIALOG, 0x77, dialog] and dialog


def test_update_window_paints_a_known_window_and_succeeds_for_others(env):
    emu, wm = env
    wm.windows[0xA10004] = WNDPROC
    assert wm.update_window(emu, "USER32.UpdateWindow", None, [0xA10004]) == 1
    assert emu.regs["pc"] == WNDPROC
    message = emu.read_ptr(emu.regs["sp"] + 4 * 2) if emu.ptr == 4 else emu.regs["rdx"]
    assert message == gui.WM_PAINT
    # The procedure's answer (0: painted) is not UpdateWindow's: TRUE.
    result_reg = se_arch.AMD64_REG_RAX if emu.ptr == 8 else se_arch.X86_REG_EAX
    emu.regs[result_reg] = 0
    emu.regs["sp"] += emu.ptr
    assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})
    assert emu.regs["pc"] == CALLER and emu.regs[result_reg] == 1
    pc = emu.regs["pc"]
    assert wm.update_window(emu, "USER32.UpdateWindow", None, [0xBAD]) == 1 and emu.regs["pc"] == pc

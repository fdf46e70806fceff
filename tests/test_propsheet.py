"""Property sheets and wizards (trace/emulate/propsheet.py): the pages' procedures run."""

import struct

import pytest
from speakeasy.winenv import arch as se_arch

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, TEXT_RVA, Data, Word, calls
from runtrace.trace.emulate import gui, propsheet, winapi
from runtrace.trace.emulate.callbacks import CALLBACK_RETURN, Callbacks
from runtrace.trace.emulate.emulator import emulate
from test_gui import CALLER, STACK, FakeEmu

DATA = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # where `calls` puts its data
PROCEDURE = IMAGE_BASE["i386"] + TEXT_RVA + 0x800
WM_USER = 0x400


def _page_x86(lparam: int) -> bytes:
    # PROPSHEETPAGEA, first version: dwSize, dwFlags, hInstance, pszTemplate, hIcon, pszTitle,
    # pfnDlgProc, lParam, pfnCallback, pcRefParent.
    return struct.pack("<10I", 0x28, 0, 0x400000, 0x65, 0, 0, PROCEDURE, lparam, 0, 0)


def _procedure(lay) -> bytes:
    """DLGPROC(hwnd, message, wParam, lParam), stdcall: Sleep(message), Sleep(dword [lParam+8]),
    Sleep(dword [lParam+28]), Sleep(lParam), so the trace shows what it got; on WM_INITDIALOG it posts
    itself WM_USER (lParam: the data area, readable); returns FALSE."""
    sleep = struct.pack("<I", lay.slot("kernel32.dll", "Sleep"))
    post = struct.pack("<I", lay.slot("user32.dll", "PostMessageA"))
    return (
        b"\x8b\x44\x24\x10"  # mov eax, [esp+16]     (lParam)
        + b"\xff\x74\x24\x10"  # push dword [esp+16] (lParam)
        + b"\xff\x70\x1c"  # push dword [eax+28]
        + b"\xff\x70\x08"  # push dword [eax+8]
        + b"\xff\x74\x24\x14"  # push dword [esp+20] (the message)
        + (b"\xff\x15" + sleep) * 4  # call [Sleep], four times
        + b"\x81\x7c\x24\x08" + struct.pack("<I", gui.WM_INITDIALOG)  # cmp dword [esp+8], WM_INITDIALOG
        + b"\x75\x16"  # jne done
        + b"\x68" + struct.pack("<I", DATA)  # push DATA   (lParam)
        + b"\x6a\x00"  # push 0                            (wParam)
        + b"\x68" + struct.pack("<I", WM_USER)  # push WM_USER
        + b"\xff\x74\x24\x10"  # push dword [esp+16]      (hwnd)
        + b"\xff\x15" + post  # call [PostMessageA]
        + b"\x31\xc0"  # done: xor eax, eax
        + b"\xc2\x10\x00"  # ret 16
    )  # fmt: skip


def test_a_two_page_wizard_runs_each_pages_procedure_and_finishes():
    header = struct.pack("<10I", 0x28, propsheet.PSH_WIZARD, 0, 0x400000, 0, 0, 2, 0, DATA + 0x100, 0)
    data = _page_x86(0x1111).ljust(0x40, b"\0") + _page_x86(0x2222)
    data = data.ljust(0x200, b"\0") + header
    program = calls(
        [
            ("comctl32.dll!CreatePropertySheetPageA", [Data(0)], Data(0x100)),
            ("comctl32.dll!CreatePropertySheetPageA", [Data(0x40)], Data(0x104)),
            ("comctl32.dll!PropertySheetA", [Data(0x200)], Data(0x300)),
            ("kernel32.dll!Sleep", [Word(0x300)]),  # what PropertySheet returned
        ],
        data=data,
        code_at={0x800: _procedure},
        extra_imports=("kernel32.dll!Sleep", "user32.dll!PostMessageA"),
    )
    trace = emulate(program, "x", "wizard")
    assert trace.meta.stop_reason.value == "exited", trace.meta.stop_detail
    pages = [c.result for c in trace.api_calls if c.name.endswith("CreatePropertySheetPageA")]
    assert len(pages) == 2 and all(pages) and DATA not in pages  # handles of copies, not the originals
    sleeps = [
        c.args[0] for c in sorted(trace.api_calls, key=lambda c: c.position) if c.name == "kernel32.Sleep"
    ]
    seen = [tuple(sleeps[i : i + 4]) for i in range(0, len(sleeps) - 1, 4)]
    code = lambda psn: psn & 0xFFFFFFFF  # noqa: E731
    initial = [
        (gui.WM_INITDIALOG, 0x400000, lp, page) for lp, page in zip((0x1111, 0x2222), pages, strict=True)
    ]
    notes = [(propsheet.WM_NOTIFY, code(psn)) for psn in (propsheet.PSN_SETACTIVE, propsheet.PSN_WIZNEXT)]
    assert seen[0] == initial[0]
    assert seen[1][:2] == notes[0]  # PSHNOTIFY.hdr.code
    assert seen[2] == (WM_USER, 0x400000, 0x1111, DATA)  # the message it posted itself
    assert seen[3][:2] == notes[1]
    assert seen[4] == initial[1]
    assert [s[:2] for s in seen[5:]] == [notes[0], (WM_USER, 0x400000), (propsheet.WM_NOTIFY, code(-205))]
    assert sleeps[-1] == propsheet.FINISHED == 1  # PropertySheet's result, after the walk


@pytest.fixture(params=[32, 64])
def sheets(request):
    emu = FakeEmu(request.param)
    callbacks = Callbacks(request.param // 8)
    callbacks.install(emu)
    return emu, propsheet.PropertySheets(gui.Gui(winapi._Scratch(emu, request.param), callbacks))


def _args(emu: FakeEmu) -> list[int]:
    if emu.ptr == 4:
        return [emu.read_ptr(emu.regs["sp"] + 4 * i) for i in (1, 2, 3, 4)]
    return [emu.regs[r] for r in ("rcx", "rdx", "r8", "r9")]


def _return(emu: FakeEmu, value: int = 0) -> None:
    emu.regs[se_arch.AMD64_REG_RAX if emu.ptr == 8 else se_arch.X86_REG_EAX] = value
    emu.regs["sp"] += emu.ptr
    assert emu._handle_invalid_fetch(None, CALLBACK_RETURN, 1, 0, {})


def _page(emu: FakeEmu, dlgproc: int, lparam: int) -> bytes:
    p = emu.ptr
    size = 8 + 8 * p  # the first version, up to pcRefParent
    slots = [0x400000, 0x65, 0, 0, dlgproc, lparam, 0, 0]
    return struct.pack("<II", size, 0) + b"".join(v.to_bytes(p, "little") for v in slots)


def test_an_array_of_pages_in_the_header_on_both_architectures(sheets):
    """PSH_PROPSHEETPAGE: the header holds the PROPSHEETPAGE structures themselves; a plain (not wizard)
    sheet from its start page: PSN_SETACTIVE, then PSN_APPLY (OK) on the last page."""
    emu, ps = sheets
    p = emu.ptr
    pages = emu.mem_alloc(0x200)
    emu.mem_write(pages, _page(emu, 0x402000, 0x1111) + _page(emu, 0x403000, 0x2222))
    psh = emu.mem_alloc(0x100)
    slots = [0, 0x400000, 0, 0, 2, 1, pages, 0]  # hwndParent ... nPages, nStartPage: 1, ppsp, pfnCallback
    emu.mem_write(psh, struct.pack("<II", 8 + 8 * p, propsheet.PSH_PROPSHEETPAGE))
    emu.mem_write(psh + 8, b"".join(v.to_bytes(p, "little") for v in slots))
    assert ps.property_sheet(emu, [psh]) == propsheet.FINISHED
    assert emu.regs["pc"] == 0x403000  # the start page, the second
    hwnd, message, wp, copy = _args(emu)
    assert message == gui.WM_INITDIALOG and wp == 0 and copy != pages + 8 + 8 * p
    assert emu.read_ptr(copy + 8 + 5 * p) == 0x2222  # lParam of the page's own copy
    received = []
    for _ in range(2):
        _return(emu)
        h, message, wp, notify = _args(emu)
        assert h == hwnd and message == propsheet.WM_NOTIFY and emu.regs["pc"] == 0x403000
        sheet = emu.read_ptr(notify)  # NMHDR.hwndFrom, then idFrom, then code
        received.append(struct.unpack("<i", emu.mem_read(notify + 2 * p, 4))[0])
    assert sheet and sheet != hwnd and received == [propsheet.PSN_SETACTIVE, propsheet.PSN_APPLY]
    # The page's parent is its sheet (where PropSheet_SetWizButtons goes); other windows ask Speakeasy.
    assert ps.get_parent(emu, "USER32.GetParent", lambda argv: 0xC, [hwnd]) == sheet
    assert ps.get_parent(emu, "USER32.GetParent", lambda argv: 0xC, [0xBAD]) == 0xC
    _return(emu)
    result_reg = se_arch.AMD64_REG_RAX if p == 8 else se_arch.X86_REG_EAX
    assert emu.regs["pc"] == CALLER and emu.regs[result_reg] == propsheet.FINISHED
    assert emu.regs["sp"] == STACK + p + (4 if p == 4 else 0)  # stdcall pops its one argument on x86


def test_posted_messages_for_pages_are_kept_and_others_go_to_speakeasy(sheets):
    emu, ps = sheets
    ps.posted[0xA10008] = queue = propsheet.deque()
    assert ps.post_message(emu, "USER32.PostMessageW", lambda argv: 7, [0xA10008, WM_USER, 1, 2]) == 1
    assert list(queue) == [(WM_USER, 1, 2)]
    assert ps.post_message(emu, "USER32.PostMessageW", lambda argv: 7, [0xBAD, WM_USER, 1, 2]) == 7
    # A sheet without pages (or an unreadable header) calls nothing and still finishes.
    psh = emu.mem_alloc(0x100)
    pc = emu.regs["pc"]
    assert ps.property_sheet(emu, [psh]) == propsheet.FINISHED and emu.regs["pc"] == pc

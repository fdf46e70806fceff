"""A stand-in window manager, so that GUI programs reach their own window procedures.

Speakeasy creates windows and dialogs as bare handles: a window procedure never gets a message, a
modal dialog's procedure is never called, and `GetMessage` reports `WM_QUIT` at once.  A GUI program's
own behaviour lives in those procedures (`WM_CREATE`, `WM_TIMER`, `WM_INITDIALOG` handlers), so its trace
ended at the message loop.  Here:

- a window of a class the program registered gets a short, fixed life through its message loop:
  `WM_CREATE` (with a real `CREATESTRUCT`), `WM_SHOWWINDOW`, `WM_SIZE`, `WM_PAINT`, `WM_TIMER`,
  `WM_COMMAND` (the OK button's id), `WM_CLOSE`, `WM_DESTROY`, then `WM_QUIT` ends the loop, as if a
  user had opened, used and closed it;
- `DispatchMessage` and `SendMessage` call the window procedure, `UpdateWindow` with `WM_PAINT`; a
  modal dialog's procedure gets `WM_INITDIALOG` and then `WM_COMMAND` for its OK button, and the dialog
  returns what the procedure returned; a modeless dialog's (`CreateDialogParam`) gets `WM_INITDIALOG`
  before its handle is returned, and later messages as a window's.

A procedure is called when the API that calls it returns, and the API then returns to the program
with the procedure's return value (`callbacks.Callbacks`).  The script is deterministic, so the same program
always gives the same trace.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque

from runtrace.trace.emulate.callbacks import Callbacks

WM_CREATE, WM_DESTROY, WM_SIZE, WM_PAINT, WM_CLOSE, WM_QUIT = 0x01, 0x02, 0x05, 0x0F, 0x10, 0x12
WM_SHOWWINDOW, WM_INITDIALOG, WM_COMMAND, WM_TIMER = 0x18, 0x110, 0x111, 0x113
IDOK = 1
PM_REMOVE = 1
# What a dialog's empty list box or combo box answers (the controls hold nothing here): no selection
# (LB_ERR / CB_ERR, -1) for the selection and per-item queries, 0 items.
_EMPTY_CONTROL = {
    0x188: -1,  # LB_GETCURSEL
    0x18A: -1,  # LB_GETTEXTLEN
    0x199: -1,  # LB_GETITEMDATA
    0x18B: 0,  # LB_GETCOUNT
    0x147: -1,  # CB_GETCURSEL
    0x149: -1,  # CB_GETLBTEXTLEN
    0x150: -1,  # CB_GETITEMDATA
    0x146: 0,  # CB_GETCOUNT
}
MAX_SCRIPTED_WINDOWS = 4  # programs that create many windows get the script for the first few
_WIDTH, _HEIGHT = 640, 480


class Gui:
    def __init__(self, scratch, callbacks: Callbacks) -> None:
        self.s = scratch
        self.callbacks = callbacks
        self.procedures: dict[str | int, int] = {}  # class name (lower case) or atom -> window procedure
        self.windows: dict[int, int] = {}  # window handle -> procedure
        self.script: deque[tuple[int, int, int, int]] = deque()  # (hwnd, message, wParam, lParam)
        self._next_atom = 0xC000
        self._next_handle = 0x00A10000
        self._scripted = 0

    # --- classes and windows -------------------------------------------------------------------------
    def register_class(self, emu, api_name: str, orig, argv: list) -> int:
        """RegisterClass[Ex]{A,W}: remember the window procedure under the class name and atom."""
        extended = "Ex" in api_name
        atom = orig(argv) if orig is not None else 0
        if not atom:
            atom = self._next_atom
            self._next_atom += 1
        try:
            wndproc, class_name = self._read_class(emu, argv[0], extended, api_name.endswith("W"))
        except Exception:  # an unreadable WNDCLASS: the class exists, without a procedure we know
            return atom
        if wndproc:
            self.procedures[atom & 0xFFFF] = wndproc
            if isinstance(class_name, str):
                self.procedures[class_name.lower()] = wndproc
        return atom

    def _read_class(self, emu, address: int, extended: bool, wide: bool) -> tuple[int, str | int]:
        p = self.s.ptr
        # WNDCLASS: style, lpfnWndProc, ...; WNDCLASSEX: cbSize, style, lpfnWndProc, ...  The class name
        # is the 10th pointer-sized field of WNDCLASS and the 11th of WNDCLASSEX, on both architectures.
        proc_at = 8 if extended else p
        name_at = (40 if extended else 36) if p == 4 else 64
        wndproc = self._read_ptr(emu, address + proc_at)
        return wndproc, self._name(emu, self._read_ptr(emu, address + name_at), wide)

    def create_window(self, emu, api_name: str, orig, argv: list) -> int:
        """CreateWindowEx{A,W}: Speakeasy's handle; a window of a known class gets its life scripted."""
        raw = list(argv)  # Speakeasy's handler replaces the name arguments by the strings it read
        class_arg = raw[1]
        hwnd = 0
        if orig is not None and class_arg >= 0x10000:  # Speakeasy reads the class name as a string
            hwnd = orig(argv)
        if not hwnd:
            hwnd = self._handle()
        name = self._name(emu, class_arg, api_name.endswith("W"))
        wndproc = self.procedures.get(name.lower() if isinstance(name, str) else name & 0xFFFF)
        if wndproc:
            self.windows[hwnd] = wndproc
            if self._scripted < MAX_SCRIPTED_WINDOWS:
                self._scripted += 1
                self._script_life(hwnd, self._create_struct(raw))
        return hwnd

    def _script_life(self, hwnd: int, create_struct: int) -> None:
        size = (_HEIGHT << 16) | _WIDTH
        life = [(WM_CREATE, 0, create_struct), (WM_SHOWWINDOW, 1, 0), (WM_SIZE, 0, size), (WM_PAINT, 0, 0),
                (WM_TIMER, 1, 0), (WM_COMMAND, IDOK, 0), (WM_CLOSE, 0, 0), (WM_DESTROY, 0, 0)]  # fmt: skip
        # WM_QUIT stays last, after every scripted window's messages.
        if self.script and self.script[-1][1] == WM_QUIT:
            self.script.pop()
        self.script.extend((hwnd, message, wp, lp) for message, wp, lp in life)
        self.script.append((0, WM_QUIT, 0, 0))

    def _create_struct(self, argv: list) -> int:
        ex_style, class_name, window_name, style, x, y, cx, cy, parent, menu, instance, param = argv[:12]
        i32 = lambda v: struct.pack("<i", ((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000)  # noqa: E731
        if self.s.ptr == 4:
            data = struct.pack("<4I", param, instance, menu, parent) + b"".join(map(i32, (cy, cx, y, x)))
            data += i32(style) + struct.pack("<3I", window_name, class_name, ex_style & 0xFFFFFFFF)
        else:
            data = struct.pack("<4Q", param, instance, menu, parent) + b"".join(map(i32, (cy, cx, y, x)))
            data += i32(style) + b"\0" * 4 + struct.pack("<2QI4x", window_name, class_name, ex_style)
        address = self.s.se.mem_alloc(len(data), tag="runtrace.createstruct")
        self.s.se.mem_write(address, data)
        return address

    # --- the message loop ----------------------------------------------------------------------------
    def get_message(self, emu, api_name: str, orig, argv: list) -> int:
        if not self.script:
            return orig(argv) if orig is not None else 0
        hwnd, message, wp, lp = self.script.popleft()
        self._write_msg(emu, argv[0], hwnd, message, wp, lp)
        return 0 if message == WM_QUIT else 1

    def peek_message(self, emu, api_name: str, orig, argv: list) -> int:
        if not self.script:
            return orig(argv) if orig is not None else 0
        hwnd, message, wp, lp = self.script[0] if not argv[4] & PM_REMOVE else self.script.popleft()
        self._write_msg(emu, argv[0], hwnd, message, wp, lp)
        return 1

    def dispatch_message(self, emu, api_name: str, orig, argv: list) -> int:
        try:
            hwnd, message, wp, lp = self._read_msg(emu, argv[0])
        except Exception:
            return 0
        wndproc = self.windows.get(hwnd)
        if (
            wndproc
            and message != WM_QUIT
            and self.callbacks.call(emu, wndproc, (hwnd, message, wp, lp), argv)
        ):
            return 0  # the procedure's return value becomes DispatchMessage's
        return orig(argv) if orig is not None else 0

    def send_message(self, emu, api_name: str, orig, argv: list) -> int:
        hwnd, message, wp, lp = argv[:4]
        wndproc = self.windows.get(hwnd)
        if wndproc and self.callbacks.call(emu, wndproc, (hwnd, message, wp, lp), argv):
            return 0
        return orig(argv) if orig is not None else 0

    def send_dialog_item_message(self, emu, api_name: str, orig, argv: list) -> int:
        """SendDlgItemMessage{A,W}(hDlg, nIDDlgItem, Msg, wParam, lParam), which Speakeasy lacks (the stub's
        0 read as "item 0 is selected", whose data a bdist_wininst installer then dereferenced): a dialog's
        controls are empty here, so list and combo boxes answer as empty ones do, anything else 0."""
        answer = _EMPTY_CONTROL.get(argv[2] & 0xFFFFFFFF, 0)
        return answer & ((1 << 8 * emu.get_ptr_size()) - 1)  # an LRESULT: -1 fills the register

    def update_window(self, emu, api_name: str, orig, argv: list) -> int:
        """UpdateWindow(hWnd): Windows sends WM_PAINT straight to the window procedure and returns TRUE.
        (Speakeasy's handler looked the window's class up in its own tables, which do not know the
        classes registered here, and failed.)"""
        hwnd = argv[0]
        wndproc = self.windows.get(hwnd)
        if wndproc:
            self.callbacks.call(emu, wndproc, (hwnd, WM_PAINT, 0, 0), argv, result=1)
        return 1

    def dialog_box(self, emu, api_name: str, orig, argv: list) -> int:
        """DialogBox[Indirect]Param{A,W}: the procedure gets WM_INITDIALOG, then WM_COMMAND for the OK
        button, as if the user had confirmed at once; the dialog ends with the procedure's last return
        value (TRUE, 1, is IDOK).  WM_INITDIALOG's answer only says whether Windows should set the
        keyboard focus (FALSE: the procedure did): the dialog runs on either way."""
        dlgproc, param = argv[3], argv[4]
        hdlg = self._handle()
        messages = ((dlgproc, (hdlg, WM_INITDIALOG, 0, param)), (dlgproc, (hdlg, WM_COMMAND, IDOK, 0)))
        pops = self.s.ptr * len(argv) if self.s.ptr == 4 else 0  # stdcall pops its arguments on x86
        # A callback needs Speakeasy to leave the return to it, which it does only for APIs it has a
        # handler for (DialogBoxParam; not DialogBoxIndirectParam): `orig` is None for the others.
        go_on = lambda result: True  # noqa: E731  (every message, whatever the procedure answered)
        if dlgproc and orig is not None and self.callbacks.call_each(emu, iter(messages), go_on, pops):
            self.windows[hdlg] = dlgproc
            return 0
        return 1  # IDOK, as if the user had confirmed at once

    def create_dialog(self, emu, argv: list) -> int:
        """CreateDialog[Indirect]Param{A,W}(hInstance, template, hWndParent, lpDialogFunc, dwInitParam): a
        modeless dialog.  Windows sends the procedure WM_INITDIALOG (lParam: dwInitParam) before it
        returns the dialog's handle; later messages reach the procedure through SendMessage and
        DispatchMessage.  (Speakeasy has no handler: the program got NULL, "no dialog", and gave up.)"""
        dlgproc, param = argv[3], argv[4]
        hdlg = self._handle()
        if dlgproc:
            self.windows[hdlg] = dlgproc
            self.callbacks.call(emu, dlgproc, (hdlg, WM_INITDIALOG, 0, param), argv, result=hdlg)
        return hdlg

    # --- memory --------------------------------------------------------------------------------------
    def _write_msg(self, emu, address: int, hwnd: int, message: int, wp: int, lp: int) -> None:
        if self.s.ptr == 4:
            data = struct.pack("<7I", hwnd, message, wp & 0xFFFFFFFF, lp & 0xFFFFFFFF, 0, 0, 0)
        else:
            data = struct.pack("<QI4xQQIiiI", hwnd, message, wp, lp, 0, 0, 0, 0)
        with contextlib.suppress(Exception):  # a bad MSG pointer: the program reads whatever is there
            emu.mem_write(address, data)

    def _read_msg(self, emu, address: int) -> tuple[int, int, int, int]:
        if self.s.ptr == 4:
            return struct.unpack("<4I", bytes(emu.mem_read(address, 16)))
        hwnd, message, wp, lp = struct.unpack("<QI4xQQ", bytes(emu.mem_read(address, 32)))
        return hwnd, message, wp, lp

    def _read_ptr(self, emu, address: int) -> int:
        return int.from_bytes(bytes(emu.mem_read(address, self.s.ptr)), "little")

    def _name(self, emu, value: int, wide: bool) -> str | int:
        if value < 0x10000:  # MAKEINTATOM
            return value
        try:
            return emu.read_mem_string(value, 2 if wide else 1)
        except Exception:
            return value

    def _handle(self) -> int:
        self._next_handle += 4
        return self._next_handle


def guarded(hook):
    # An exception escaping an API hook would end the emulation run: a failure here costs the program
    # only a 0 from this call.
    def call(emu, api_name, orig, argv):
        try:
            return hook(emu, api_name, orig, argv)
        except Exception:
            return 0

    return call


def handlers(gui: Gui) -> list[tuple[str, int, object]]:
    """(user32 API name, argc, hook(emu, api_name, orig, argv)) for every A and W variant."""
    out = []
    for name, argc, hook in [
        ("RegisterClass", 1, gui.register_class),
        ("RegisterClassEx", 1, gui.register_class),
        ("CreateWindowEx", 12, gui.create_window),
        ("GetMessage", 4, gui.get_message),
        ("PeekMessage", 5, gui.peek_message),
        ("DispatchMessage", 1, gui.dispatch_message),
        ("SendMessage", 4, gui.send_message),
        ("DialogBoxParam", 5, gui.dialog_box),
        ("DialogBoxIndirectParam", 5, gui.dialog_box),
        ("SendDlgItemMessage", 5, gui.send_dialog_item_message),
    ]:
        out += [(name + suffix, argc, guarded(hook)) for suffix in ("A", "W")]
    return [*out, ("UpdateWindow", 1, guarded(gui.update_window))]

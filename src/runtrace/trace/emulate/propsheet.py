"""Property sheets and wizards (comctl32's `CreatePropertySheetPage` and `PropertySheet`), walked through.

Speakeasy's comctl32 has neither API: stubbed, `CreatePropertySheetPage` gave NULL, `PropertySheet`
returned 0 ("cancelled") at once, and a wizard program (Python's bdist_wininst installers, setup
programs) exited without any of its page dialog procedures running, where all its work is.  Here:

- `CreatePropertySheetPage{A,W}(ppsp)` copies the PROPSHEETPAGE (its `dwSize` bytes) into memory of its
  own, as comctl32 does, and returns that copy's address as the page handle (HPROPSHEETPAGE);
- `PropertySheet{A,W}(psh)` makes a window handle for the sheet and one per page, then walks the pages
  from the start page to the last as a user clicking "Next" would: each page's procedure gets
  `WM_INITDIALOG` (lParam: the page's PROPSHEETPAGE copy, as Windows passes it), `WM_NOTIFY` with
  `PSN_SETACTIVE`, the messages the procedure posted to its own page meanwhile (bdist_wininst does its
  installing in answer to a `WM_USER` it posts itself on activation), then `WM_NOTIFY` with
  `PSN_WIZNEXT`, or `PSN_WIZFINISH` on the last page.  A sheet that is not a wizard gets
  `PSN_KILLACTIVE` for a page left and `PSN_APPLY` (the OK button) on its last page instead.

The walk is fixed and bounded (`MAX_PAGES` pages, `MAX_POSTED` posted messages per page); the procedures'
answers (a page refusing to be left, `DWL_MSGRESULT`) are not consulted.  Each call goes through
`callbacks.Callbacks`: the procedures run when `PropertySheet` returns, and it then returns to the
program.  Page windows are the window manager's (`gui.Gui`), so `SendMessage` to a page reaches its
procedure as well, and `GetParent` of a page is its sheet.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator

from runtrace.trace.emulate import gui

WM_NOTIFY, WM_INITDIALOG = 0x4E, 0x110
PSN_SETACTIVE, PSN_KILLACTIVE, PSN_APPLY = -200, -201, -202
PSN_WIZNEXT, PSN_WIZFINISH = -206, -205
PSH_PROPSHEETPAGE, PSH_WIZARD, PSH_USEPSTARTPAGE, PSH_MODELESS = 0x8, 0x20, 0x800, 0x400
PSH_WIZARD97 = 0x01000000 | 0x2000  # the flag's value since comctl32 5.80, and the one before it
PSP_USECALLBACK = 0x80
PSPCB_CREATE = 2
# PropertySheet's result for a sheet that was completed: the pages' "Finish"/OK, without a page asking for
# a restart (ID_PSRESTARTWINDOWS, 2, or ID_PSREBOOTSYSTEM, 3): 1, what a user finishing the wizard gives.
# (0 or -1 is "cancelled" or "failed", after which a program gives up.)
FINISHED = 1
MAX_PAGES = 8  # bdist_wininst has four; a sheet with more gets its first few walked
MAX_POSTED = 8  # messages a page may post itself and get delivered, per page
_MAX_PAGE_SIZE = 0x200  # larger than any version's; a larger dwSize is garbage, not copied


class PropertySheets:
    """The pages and posted messages of the property sheets of one emulated program."""

    def __init__(self, window_manager: gui.Gui) -> None:
        self.wm = window_manager
        self.s = window_manager.s
        self.ptr = self.s.ptr
        self.posted: dict[int, deque[tuple[int, int, int]]] = {}  # page window -> (message, wParam, lParam)
        self.sheets: dict[int, int] = {}  # page window -> its sheet's window

    # --- the structures --------------------------------------------------------------------------
    def _field(self, index: int) -> int:
        # After dwSize and dwFlags (4 bytes each), PROPSHEETPAGE's and PROPSHEETHEADER's fields are
        # pointer-sized slots on both architectures (PROPSHEETHEADER's UINT nPages in one of its own).
        return 8 + index * self.ptr

    def _read_u32(self, emu, address: int) -> int:
        return int.from_bytes(bytes(emu.mem_read(address, 4)), "little")

    def _page_size(self, emu, ppsp: int) -> int:
        # PROPSHEETPAGE's first version ends after pcRefParent, the eighth slot; a dwSize below it (or
        # implausibly large) is taken as that version's.
        size, smallest = self._read_u32(emu, ppsp), self._field(8)
        return size if smallest <= size <= _MAX_PAGE_SIZE else smallest

    def _copy_page(self, emu, ppsp: int) -> int:
        size = self._page_size(emu, ppsp)
        data = bytes(emu.mem_read(ppsp, size))
        copy = self.s.se.mem_alloc(size, tag="runtrace.propsheetpage")
        self.s.se.mem_write(copy, data)
        return copy

    # --- the APIs ----------------------------------------------------------------------------------
    def create_page(self, emu, argv: list) -> int:
        """CreatePropertySheetPage{A,W}(LPCPROPSHEETPAGE): the page's handle, its PROPSHEETPAGE copy."""
        return self._copy_page(emu, argv[0]) if argv[0] else 0

    def property_sheet(self, emu, argv: list) -> int:
        """PropertySheet{A,W}(LPCPROPSHEETHEADER): walks the pages (module docstring); FINISHED, or the
        sheet's window for a modeless one, as Windows returns it."""
        psh = argv[0]
        flags = self._read_u32(emu, psh + 4)
        count = min(self._read_u32(emu, psh + self._field(4)), MAX_PAGES)
        start = 0 if flags & PSH_USEPSTARTPAGE else self._read_u32(emu, psh + self._field(5))
        pages_at = self.wm._read_ptr(emu, psh + self._field(6))
        pages = []
        for i in range(count if pages_at else 0):
            if flags & PSH_PROPSHEETPAGE:  # PROPSHEETPAGE structures end to end, each dwSize long
                pages.append(self._copy_page(emu, pages_at))
                pages_at += self._page_size(emu, pages_at)
            else:  # page handles: this module's copies
                pages.append(self.wm._read_ptr(emu, pages_at + i * self.ptr))
        pages = [p for p in pages[start:] if p]
        sheet = self.wm._handle()
        result = sheet if flags & PSH_MODELESS else FINISHED
        if not pages:
            return result
        wizard = bool(flags & (PSH_WIZARD | PSH_WIZARD97))
        notify = self.s.se.mem_alloc(4 * self.ptr, tag="runtrace.pshnotify")  # PSHNOTIFY, once per sheet
        calls = self._walk(emu, sheet, pages, wizard, notify)
        pops = self.ptr if self.ptr == 4 else 0  # stdcall, one argument
        go_on: Callable[[int], bool] = lambda answer: True  # noqa: E731  (the walk is fixed)
        self.wm.callbacks.call_each(emu, calls, go_on, pops, result=result)
        return result

    def post_message(self, emu, api_name: str, orig, argv: list) -> int:
        """PostMessage{A,W}(hWnd, Msg, wParam, lParam): a message for a page of a sheet being walked is
        kept for that page's procedure (TRUE, posted); any other goes to Speakeasy's handler."""
        queue = self.posted.get(argv[0])
        if queue is not None:
            if len(queue) < MAX_POSTED:
                queue.append((argv[1], argv[2], argv[3]))
            return 1
        return orig(argv) if orig is not None else 1

    def get_parent(self, emu, api_name: str, orig, argv: list) -> int:
        """GetParent(hWnd): a page's parent is its sheet, to which its procedure sends the sheet's
        messages (`PropSheet_SetWizButtons`, `PropSheet_PressButton`); any other goes to Speakeasy's
        handler (which made up a new handle on each call)."""
        sheet = self.sheets.get(argv[0])
        if sheet is not None:
            return sheet
        return orig(argv) if orig is not None else 0

    # --- the walk ----------------------------------------------------------------------------------
    def _walk(self, emu, sheet: int, pages: list[int], wizard: bool, notify: int) -> Iterator[tuple]:
        """(function, arguments) for each call, made as the one before returns (so that each
        notification's code is written just before its call, and posted messages are seen)."""
        try:
            for number, page in enumerate(pages):
                flags = self._read_u32(emu, page + 4)
                dlgproc = self.wm._read_ptr(emu, page + self._field(4))
                callback = self.wm._read_ptr(emu, page + self._field(6))
                if flags & PSP_USECALLBACK and callback:  # PropSheetPageProc(hwnd: reserved, uMsg, ppsp)
                    yield callback, (0, PSPCB_CREATE, page)
                if not dlgproc:
                    continue
                hwnd = self.wm._handle()
                self.wm.windows[hwnd] = dlgproc
                self.sheets[hwnd] = sheet
                self.posted[hwnd] = queue = deque()
                yield dlgproc, (hwnd, WM_INITDIALOG, 0, page)
                self._notify(emu, notify, sheet, PSN_SETACTIVE)
                yield dlgproc, (hwnd, WM_NOTIFY, 0, notify)
                delivered = 0
                while queue and delivered < MAX_POSTED:
                    delivered += 1
                    message, wp, lp = queue.popleft()
                    yield dlgproc, (hwnd, message, wp, lp)
                del self.posted[hwnd]  # later posts go to Speakeasy, as for any other window
                last = number == len(pages) - 1
                if wizard:
                    self._notify(emu, notify, sheet, PSN_WIZFINISH if last else PSN_WIZNEXT)
                else:
                    self._notify(emu, notify, sheet, PSN_APPLY if last else PSN_KILLACTIVE)
                yield dlgproc, (hwnd, WM_NOTIFY, 0, notify)
        except Exception:  # an unreadable page: the walk ends, PropertySheet returns to the program
            return

    def _notify(self, emu, address: int, sheet: int, code: int) -> None:
        # PSHNOTIFY: NMHDR {HWND hwndFrom; UINT_PTR idFrom; UINT code}, then LPARAM lParam (0: the
        # "Finish" and "Next" buttons, not the keyboard).
        fmt = "<IIIi" if self.ptr == 4 else "<QQI4xq"
        emu.mem_write(address, struct.pack(fmt, sheet, 0, code & 0xFFFFFFFF, 0))

    def handlers(self) -> list[tuple[str, int, Callable[[object, list], int]]]:
        """(comctl32 name, without its A/W suffix, stdcall argc, handler(emu, argv))."""
        return [
            ("CreatePropertySheetPage", 1, self.create_page),
            ("PropertySheet", 1, self.property_sheet),
            ("DestroyPropertySheetPage", 1, lambda emu, argv: 1),
        ]

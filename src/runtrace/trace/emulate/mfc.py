"""A stand-in for MFC's application start, so that an MFC program's own code runs.

An MFC program's `WinMain` is MFC's `AfxWinMain`, in a DLL the emulator does not have: stubbed, it
returned at once and the program exited after its C-runtime start-up.  What the real one does (MFC's
appmodul.cpp/winmain.cpp, the same in every version):

- the program's global application object (a class derived from `CWinApp`) is built by the C runtime's
  initialisers before `WinMain`; MFC's `CWinApp` constructor records it in the module state
  (`AFX_MODULE_STATE::m_pCurrentWinApp`, which `AfxGetApp()`, inline in the program, reads);
- `AfxWinMain` initialises MFC, then calls the application's `InitInstance` through its vtable; a
  dialog-based program does all its work there and returns FALSE, after which `ExitInstance` runs
  (a program whose `InitInstance` returns TRUE runs MFC's message loop, `Run`, which ends in
  `ExitInstance` too).

Here the constructor import records `this` (and returns it, popping its one argument, as thiscall does);
`AfxGetModuleState` returns a zeroed module state holding the application object and the instance
handle; `AfxWinInit` succeeds; `AfxWinMain` calls `InitInstance`, then `ExitInstance`, through the
object's vtable and returns the latter's result.  MFC's own message loop is not emulated.

The vtable slots follow from MFC's class layout: `CWinApp` derives from `CWinThread`, which derives
from `CCmdTarget`, which derives from `CObject`; `InitInstance` is `CWinThread`'s first virtual
function, after `CObject`'s five (`GetRuntimeClass`, the destructor, `Serialize`, `AssertValid`,
`Dump`; the last two are virtual in the DLL builds) and `CCmdTarget`'s seventeen in MFC 4.2
(mfc42.dll); `ExitInstance` is `CWinThread`'s seventh (after `Run`, `PreTranslateMessage`,
`PumpMessage`, `OnIdle`, `IsIdleMessage`).  MFC exports by ordinal only; the ordinals are MFC 4.2's
(`AfxWinInit` 1575 and `AfxWinMain` 1576; the `CWinApp` constructor 561, whose call sites construct
the global object and then store the derived class's vtable in it; `AfxGetModuleState` 1168).  Other
MFC versions have other ordinals and layouts and are left to the plain stubs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
_MODULE_STATE_SIZE = 0x2000  # larger than MFC 4.2's AFX_MODULE_STATE (fields up to 0x1040 and beyond)


@dataclass(frozen=True)
class MfcVersion:
    modules: tuple[str, ...]
    win_init: int
    win_main: int
    app_constructor: int
    module_state: int
    init_instance: int  # vtable slots
    exit_instance: int


MFC42 = MfcVersion(
    modules=("mfc42",),
    win_init=1575,
    win_main=1576,
    app_constructor=561,
    module_state=1168,
    init_instance=5 + 17,
    exit_instance=5 + 17 + 6,
)
VERSIONS = (MFC42,)


class MfcApplication:
    """The application object and module state of one emulated MFC program."""

    def __init__(self, se, ptr: int, callbacks) -> None:
        self.se, self.ptr, self.callbacks = se, ptr, callbacks
        self.app = 0  # the CWinApp object, once its constructor was called
        self._state = 0

    @property
    def emu(self):
        return self.se.emu

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        """(module, "ordinal_N") -> (argc, handler(emu, argv)); stdcall or thiscall, argc on the stack."""
        out = {}
        for version in VERSIONS:
            for module in version.modules:
                out[(module, f"ordinal_{version.win_init}")] = (4, lambda emu, argv: 1)
                out[(module, f"ordinal_{version.win_main}")] = (
                    4,
                    lambda emu, a, v=version: self.win_main(emu, v),
                )
                out[(module, f"ordinal_{version.app_constructor}")] = (1, self.construct_app)
                out[(module, f"ordinal_{version.module_state}")] = (0, lambda emu, argv: self.module_state())
        return out

    def _this(self, emu, argv: list) -> int:
        if self.ptr == 8:  # x64: `this` is the first argument, rcx
            return emu.reg_read(se_arch.AMD64_REG_RCX)
        return emu.reg_read(se_arch.X86_REG_ECX)

    def module_state(self) -> int:
        if not self._state:
            self._state = self.se.mem_alloc(_MODULE_STATE_SIZE, tag="runtrace.mfc_module_state")
            self.se.mem_write(self._state, bytes(_MODULE_STATE_SIZE))
            base = self.emu.get_current_module().get_base() if self.emu.get_current_module() else 0
            # After the vtable pointer: m_pCurrentWinApp, m_hCurrentInstanceHandle, m_hCurrentResourceHandle.
            self._write_ptr(self._state + 2 * self.ptr, base)
            self._write_ptr(self._state + 3 * self.ptr, base)
            if self.app:
                self._write_ptr(self._state + self.ptr, self.app)
        return self._state

    def construct_app(self, emu, argv: list) -> int:
        """CWinApp::CWinApp(LPCTSTR lpszAppName): records the object; returns `this`."""
        self.app = self._this(emu, argv)
        self._write_ptr(self.module_state() + self.ptr, self.app)
        return self.app

    def win_main(self, emu, version: MfcVersion) -> int:
        """AfxWinMain(hInstance, hPrevInstance, lpCmdLine, nCmdShow): the application's InitInstance,
        then its ExitInstance; their result (0 without an application object)."""
        if not self.app:
            return 0
        try:
            vtable = self._read_ptr(self.app)
            calls = [(self._read_ptr(vtable + slot * self.ptr), (), self.app)
                     for slot in (version.init_instance, version.exit_instance)]  # fmt: skip
        except Exception:  # no readable vtable: nothing to call
            return 0
        calls = [c for c in calls if c[0]]
        pops = 4 * self.ptr if self.ptr == 4 else 0
        self.callbacks.call_each(emu, iter(calls), lambda result: True, pops)
        return 0

    def _read_ptr(self, address: int) -> int:
        return int.from_bytes(bytes(self.emu.mem_read(address, self.ptr)), "little")

    def _write_ptr(self, address: int, value: int) -> None:
        self.emu.mem_write(address, value.to_bytes(self.ptr, "little"))

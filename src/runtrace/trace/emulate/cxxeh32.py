"""Visual C++ exceptions on x86: `throw` raised as the runtime raises it, `catch` blocks run.

Speakeasy has no `_CxxThrowException`: its stub returned to the `int 3` the compiler places after the
call, and the breakpoint went to the function's C++ frame handler, whose stub answered "continue
execution" at the `int 3` again, until the time limit.  No `catch` block ever ran.

Here a throw is raised as MSVC's runtime raises it (code 0xE06D7363, non-continuable, with the magic
number, the thrown object and its `ThrowInfo` as parameters), and the C++ frame handlers
(`__CxxFrameHandler`, `...2`, `...3`; the thunk of each function with a `try` or a destructor hands them
its `FuncInfo` in eax) look for a `catch` as the runtime's do:

- the frame's state (the registration's try level) picks the `try` blocks that enclose it, innermost
  first, and their `catch` clauses are compared in order with the thrown object's catchable types (by
  type descriptor, or its decorated name); `catch (...)` takes any C++ exception and, for functions
  compiled before `/EHs` was recorded (magic 0x19930520/21) or without it, any other exception too;
- with no match in the frame, the frames below it in the thread's list are looked at in turn, as long
  as they are C++ frames (their handler a thunk `mov eax, FuncInfo; jmp ...`): Speakeasy calls only the
  first handler of the list, and an `__except` frame between them ends the search here;
- a match: the catch object is written into the frame (a reference: the object's address adjusted to
  the caught base; a value: its bytes; a class's copy constructor does not run), the frames the
  exception leaves are unlinked and their destructors run (each frame's unwind map, from its state to
  none; the catching frame's to the `try` block's first state), the state set to the catch block's,
  and the catch block runs as the runtime runs it, a funclet with ebp set to the frame's; execution goes
  on at the address it returns, with esp restored from the frame's saved esp (`[ebp-10h]`).

What is not done: the exception object's destructor after the catch, exception specifications, the
terminate handler.  A frame handler without a match answers as before (0, Speakeasy's answer), so
programs whose faults nothing catches run as they did.  A throw that no frame of the list can catch (all
C++ frames, none with a matching clause) ends the run, as the runtime's `terminate` ends the process.
"""

from __future__ import annotations

import struct

from speakeasy.windows.common import EMU_RETURN_ADDR
from speakeasy.winenv import arch as se_arch
from unicorn import UcError

from runtrace.trace.emulate import strings
from runtrace.trace.emulate.seh32 import end_unhandled

STDCALL = se_arch.CALL_CONV_STDCALL
CDECL = se_arch.CALL_CONV_CDECL
CXX_EXCEPTION = 0xE06D7363  # 0xE0000000 | "msc"
_MAGICS = (0x19930520, 0x19930521, 0x19930522)  # FuncInfo and exception versions: VC6, VC7, VC8 on
_EHS_FLAG = 1  # FuncInfo.EHFlags (from 0x19930522): /EHs, so catch (...) takes C++ exceptions only
_NONCONTINUABLE = 1
_UNWINDING = 2 | 4  # EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND: a frame handler called to unwind
CONTINUE_SEARCH = 1
_REFERENCE = 8  # HandlerType.adjectives: caught by reference
_SIMPLE_TYPE = 1  # CatchableType.properties
_BY_REFERENCE_ONLY = 2
# Where a funclet returns to: after Speakeasy's SEH return (+4), before its API-callback address (+8);
# +2 and +3 are runtrace's callbacks' and the amd64 dispatcher's.
FUNCLET_RETURN = EMU_RETURN_ADDR + 5
_MAX_FRAMES = 64  # a corrupt list ends here rather than loop
_MAX_ENTRIES = 4096  # try blocks, catch clauses or unwind steps of one function: more is not a FuncInfo
_NAME_MAX = 512
_FRAME_HANDLERS = ("__CxxFrameHandler", "__CxxFrameHandler2", "__CxxFrameHandler3")
_NOBODY = "nobody"  # a search that reached the end of the list without a catch


class CxxExceptions:
    """One emulation's x86 C++ exceptions: the throw, the frame handlers, the catch blocks run."""

    def __init__(self, emu) -> None:
        self.emu = emu
        self.thrown: tuple[int, int] | None = None  # (object, throw info) of the last throw: `throw;`
        self._clobbered: tuple[int, bytes] | None = None  # (list head, the dword Speakeasy wrote over)
        # Catch sequences under way, innermost last: (run, stack pointer a funclet returns with,
        # funclets still to call as (ebp, address), the catching frame's ebp).
        self._pending: list[tuple[object, int, list[tuple[int, int]], int]] = []

    # -- installation --------------------------------------------------------------------------------

    def install(self, se) -> None:
        crt = se.emu.api.load_api_handler("msvcrt")  # Speakeasy files every C runtime's exports here
        # As Speakeasy's own handlers, so that one may leave the API's return to the emulated code.
        crt.funcs["_CxxThrowException"] = ("_CxxThrowException", self._throw_handler, 2, STDCALL, None)
        for name in _FRAME_HANDLERS:
            crt.funcs[name] = (name, self._frame_handler, 4, CDECL, None)
        emu = se.emu
        dispatch, fetch = emu._dispatch_seh_x86, emu._handle_invalid_fetch

        def dispatch_seh_x86(code):
            # Speakeasy stores the exception pointers below the first registration, where an `__except`
            # frame keeps them; a C++ frame keeps its saved esp there, which the catch needs.
            head = emu._get_exception_list()
            if head and head != 0xFFFFFFFF:
                self._clobbered = (head, bytes(emu.mem_read(head - 4, 4)))
            return dispatch(code)

        def handle_invalid_fetch(uc, address, size, value, ctx):
            if address == FUNCLET_RETURN and self._funclet_returned():
                return True
            return fetch(uc, address, size, value, ctx)

        emu._dispatch_seh_x86 = dispatch_seh_x86
        emu._handle_invalid_fetch = handle_invalid_fetch

    # -- memory --------------------------------------------------------------------------------------

    def _u32(self, address: int) -> int:
        return struct.unpack("<I", self.emu.mem_read(address, 4))[0]

    def _s32(self, address: int) -> int:
        return struct.unpack("<i", self.emu.mem_read(address, 4))[0]

    def _name(self, type_descriptor: int) -> bytes:
        """The decorated name after the descriptor's pVFTable and spare fields, read up to its NUL a page
        at a time (a descriptor near the end of its section has no `_NAME_MAX` bytes after it).  A name
        that runs off mapped memory matches only its own descriptor (and is not `catch (...)`'s empty one)."""
        try:
            return strings.c_text(self.emu, type_descriptor + 8, _NAME_MAX)
        except UcError:
            return f"<unreadable at {type_descriptor:#x}>".encode()

    # -- throw ---------------------------------------------------------------------------------------

    def _throw_handler(self, _handlers, emu, argv, _ctx) -> int:
        obj, info = (list(argv) + [0, 0])[:2]
        if not obj and not info and self.thrown is not None:  # `throw;` rethrows the exception caught
            obj, info = self.thrown
        self.thrown = (obj, info)
        head = emu._get_exception_list()
        if self._search_from(head, self._catchable_types(info)) is _NOBODY or not emu.dispatch_seh(
            CXX_EXCEPTION
        ):
            end_unhandled(emu, CXX_EXCEPTION)  # the runtime's terminate()
            return 0
        # Speakeasy's record has the code only: the parameters are what the frame handlers match on.
        record = self._u32(emu.get_stack_ptr() + 4)  # the handler's first argument
        emu.mem_write(record + 4, struct.pack("<I", _NONCONTINUABLE))
        emu.mem_write(record + 0x10, struct.pack("<IIII", 3, _MAGICS[0], obj, info))
        return 0

    # -- frame handlers ------------------------------------------------------------------------------

    def _frame_handler(self, _handlers, emu, argv, _ctx) -> int:
        record, registration = argv[:2]
        func_info = emu.reg_read(se_arch.X86_REG_EAX)
        if self._clobbered is not None and self._clobbered[0] == registration:
            emu.mem_write(registration - 4, self._clobbered[1])
            self._clobbered = None
        try:
            code, flags = struct.unpack("<II", emu.mem_read(record, 8))
            if flags & _UNWINDING:
                return CONTINUE_SEARCH
            thrown = self._catchable_types(self._thrown_info(record)) if code == CXX_EXCEPTION else None
            found = self._search(registration, func_info, thrown, code == CXX_EXCEPTION)
        except Exception:  # unreadable tables: not a frame this reads; answer as Speakeasy did
            return 0
        if isinstance(found, tuple):
            self._catch(record, *found)
        return 0  # no catch took it: Speakeasy's answer, as before

    def _thrown_info(self, record: int) -> int:
        count, magic, _obj, info = struct.unpack("<IIII", self.emu.mem_read(record + 0x10, 16))
        return info if count >= 3 and magic in _MAGICS else 0

    def _catchable_types(self, info: int) -> list[tuple[int, ...]]:
        """The catchable types of a ThrowInfo: (properties, type descriptor, mdisp, pdisp, vdisp, size)."""
        if not info:
            return []
        try:
            array = self._u32(info + 0xC)
            n = min(self._u32(array), _MAX_ENTRIES)
            types = [self._u32(array + 4 + 4 * i) for i in range(n)]
            return [struct.unpack("<IIiiii", self.emu.mem_read(t, 24)) for t in types]
        except Exception:  # not a ThrowInfo: only catch (...) takes it
            return []

    def _search_from(self, registration: int, thrown):
        """`_search` from the first registration of the thread's list, whose FuncInfo its thunk names."""
        if registration in (0, 0xFFFFFFFF):
            return _NOBODY
        try:
            func_info = self._thunk_func_info(self._u32(registration + 4))
            return None if func_info is None else self._search(registration, func_info, thrown, True)
        except Exception:
            return None

    def _search(self, registration: int, func_info: int, thrown, is_cxx: bool):
        """(frames left, the catching registration and FuncInfo, its try block, handler, catchable type)
        of the first catch clause that takes the exception; `_NOBODY` when the C++ frames of the list
        have none and the list ends; None where the search stops at a frame it cannot read."""
        left: list[tuple[int, int]] = []
        for _ in range(_MAX_FRAMES):
            if self._u32(func_info) not in _MAGICS:
                return None
            match = self._match_in_frame(registration, func_info, thrown, is_cxx)
            if match is not None:
                return (left, registration, func_info, *match)
            left.append((registration, func_info))
            registration = self._u32(registration)
            if registration in (0, 0xFFFFFFFF):
                return _NOBODY
            func_info = self._thunk_func_info(self._u32(registration + 4))
            if func_info is None:  # an `__except` frame or another handler: not searched past
                return None
        return None

    def _match_in_frame(self, registration: int, func_info: int, thrown, is_cxx: bool):
        magic, _max, _unwind, n_try, try_map = struct.unpack("<IiIII", self.emu.mem_read(func_info, 20))
        ehs = magic >= 0x19930522 and self._u32(func_info + 0x20) & _EHS_FLAG
        state = self._s32(registration + 8)
        for t in range(min(n_try, _MAX_ENTRIES)):
            low, high, _catch_high, n_catch, handlers = struct.unpack(
                "<iiiII", self.emu.mem_read(try_map + 20 * t, 20)
            )
            if not low <= state <= high:
                continue
            for h in range(min(n_catch, _MAX_ENTRIES)):
                handler = struct.unpack("<IIiI", self.emu.mem_read(handlers + 16 * h, 16))
                adjectives, type_descriptor = handler[:2]
                if not type_descriptor or not self._name(type_descriptor):  # catch (...)
                    if is_cxx or not ehs:
                        return (t, handler, None)
                    continue
                for catchable in thrown or ():
                    same = catchable[1] == type_descriptor or self._name(catchable[1]) == self._name(
                        type_descriptor
                    )
                    if same and (adjectives & _REFERENCE or not catchable[0] & _BY_REFERENCE_ONLY):
                        return (t, handler, catchable)
        return None

    def _thunk_func_info(self, handler: int) -> int | None:
        """The FuncInfo a C++ frame's handler thunk loads: `mov eax, imm32` then `jmp`, after the
        security-cookie check of later compilers."""
        try:
            code = bytes(self.emu.mem_read(handler, 48))
        except Exception:
            return None
        at = code.find(b"\xb8")
        while 0 <= at <= len(code) - 6:
            if code[at + 5] in (0xE9, 0xFF):  # jmp rel32, jmp [import]
                candidate = struct.unpack_from("<I", code, at + 1)[0]
                try:
                    if self._u32(candidate) in _MAGICS:
                        return candidate
                except Exception:
                    pass
            at = code.find(b"\xb8", at + 1)
        return None

    # -- catch ---------------------------------------------------------------------------------------

    def _catch(self, record: int, left, registration, func_info, try_index, handler, catchable):
        emu = self.emu
        ebp = registration + 0xC  # the registration is {next, handler, state} at ebp-0Ch
        _adjectives, _type, displacement, funclet = handler
        if displacement and catchable is not None:
            obj = self._u32(record + 0x18)
            self._write_catch_object(ebp + displacement, obj, handler[0], catchable)
        funclets = []
        for frame, info in left:  # the frames the exception leaves, innermost first: all their objects
            funclets += self._unwind(frame + 0xC, info, self._s32(frame + 8), -1)
        low, high = struct.unpack("<ii", emu.mem_read(self._u32(func_info + 0x10) + 20 * try_index, 8))
        funclets += self._unwind(ebp, func_info, self._s32(registration + 8), low)
        thread = emu.get_current_thread()
        if thread is not None:  # the frames above the catching one leave the thread's list
            emu.mem_write(thread.get_teb().address, struct.pack("<I", registration))
        emu.mem_write(registration + 8, struct.pack("<i", high + 1))  # the catch block's first state
        funclets.append((ebp, funclet))
        # The handler was called by Speakeasy's dispatch with its SEH return address: not returned to.
        sp = emu.get_stack_ptr() + 4
        self._pending.append((emu.get_current_run(), sp, funclets, ebp))
        self._call_next(sp, funclets)

    def _write_catch_object(self, target: int, obj: int, adjectives: int, catchable) -> None:
        properties, _type, mdisp, pdisp, vdisp, size = catchable
        address = obj
        if pdisp >= 0:  # a virtual base: its offset from the virtual base table
            table = self._u32(obj + pdisp)
            address = obj + pdisp + self._s32(table + vdisp)
        address = (address + mdisp) & 0xFFFFFFFF
        if adjectives & _REFERENCE:
            self.emu.mem_write(target, struct.pack("<I", address))
        elif 0 < size <= 0x10000:
            source = obj if properties & _SIMPLE_TYPE else address
            self.emu.mem_write(target, bytes(self.emu.mem_read(source, size)))

    def _unwind(self, ebp: int, func_info: int, state: int, target: int) -> list[tuple[int, int]]:
        """The unwind funclets (destructors) that take the frame from `state` down to `target`."""
        max_state, unwind_map = struct.unpack("<iI", self.emu.mem_read(func_info + 4, 8))
        out = []
        for _ in range(_MAX_ENTRIES):
            if state == target or not 0 <= state < max_state:
                break
            to_state, action = struct.unpack("<iI", self.emu.mem_read(unwind_map + 8 * state, 8))
            if action:
                out.append((ebp, action))
            state = to_state
        return out

    def _call_next(self, sp: int, funclets: list[tuple[int, int]]) -> None:
        ebp, address = funclets.pop(0)
        emu = self.emu
        emu.reg_write(se_arch.X86_REG_EBP, ebp)
        emu.mem_write(sp - 4, struct.pack("<I", FUNCLET_RETURN))
        emu.reg_write(se_arch.X86_REG_ESP, sp - 4)
        emu.set_pc(address)

    def _funclet_returned(self) -> bool:
        emu = self.emu
        run, sp = emu.get_current_run(), emu.get_stack_ptr()
        # Sequences of another run, or left when an exception went out of a catch block, are dropped.
        while self._pending and (self._pending[-1][0] is not run or self._pending[-1][1] < sp):
            self._pending.pop()
        if not self._pending or self._pending[-1][1] != sp:
            return False
        _, _, funclets, ebp = self._pending[-1]
        if funclets:
            self._call_next(sp, funclets)
        else:
            # The catch block returned where execution goes on, in the frame as it was before the try.
            self._pending.pop()
            continuation = emu.reg_read(se_arch.X86_REG_EAX)
            emu.reg_write(se_arch.X86_REG_EBP, ebp)
            emu.reg_write(se_arch.X86_REG_ESP, self._u32(ebp - 0x10))
            emu.set_pc(continuation)
        emu._unset_emu_hooks()  # as Speakeasy does after its own returns to emulated code
        return True

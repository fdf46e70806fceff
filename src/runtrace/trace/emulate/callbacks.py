"""Calling the program's own functions from an API handler: window procedures, enumeration callbacks.

An API that calls back (DispatchMessage, EnumResourceNames, ...) does so before it returns: here the
handler arranges for the callee to run when the API returns, and for the API to return to the program
only when the callee (or the last of a series of callees) has returned, with the callee's return value.

Not Speakeasy's `setup_callback`: on amd64 it starts the callee with a misaligned stack (aligned SSE
stores then fault) and returns to the caller 0x20 bytes off.  A callee returns to `CALLBACK_RETURN`, an
address in Speakeasy's reserved region that nothing else uses, where `Callbacks._returned` starts the
next call of a series or restores the caller's stack exactly.  This needs Speakeasy to leave the API's
return to the handler, which it does only for APIs it has a handler for (or that runtrace registers as
one, `winapi.add_handler`).
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before speakeasy)

from collections.abc import Callable, Iterator

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
from speakeasy.windows.common import EMU_RETURN_ADDR
from speakeasy.winenv import arch as se_arch

MAX_NESTED = 8  # a procedure that sends messages from a message handler, and so on
# Where a called-back function returns to: between Speakeasy's EXIT (+1) and SEH (+4) return addresses.
CALLBACK_RETURN = EMU_RETURN_ADDR + 2
_SP = {4: se_arch.X86_REG_ESP, 8: se_arch.AMD64_REG_RSP}
_RESULT = {4: se_arch.X86_REG_EAX, 8: se_arch.AMD64_REG_RAX}


class Callbacks:
    def __init__(self, ptr_size: int) -> None:
        self.ptr = ptr_size
        # (run, more (function, arguments) pairs, go on after a result?, return address, stack pointer,
        # the bytes of arguments the API pops, the API's own result or None)
        self._pending: list[tuple[object, Iterator, Callable[[int], bool], int, int, int, int | None]] = []

    def call(
        self,
        emu,
        function: int,
        calls: Iterator[tuple[int, ...]] | tuple[int, ...],
        caller_argv,
        result: int | None = None,
    ) -> bool:
        """Call `function` with one argument tuple, or with each tuple of an iterator in turn until it
        returns 0 (an enumeration callback asking to stop), when the current API returns; the API then
        returns `result`, or the callee's result when it is None.  False when nothing is called (no
        run, too deeply nested, no arguments)."""
        calls = iter([calls]) if isinstance(calls, tuple) else iter(calls)
        pops = self.ptr * len(caller_argv) if self.ptr == 4 else 0  # stdcall pops its arguments on x86
        return self.call_each(emu, ((function, args) for args in calls), bool, pops, result)

    def call_each(
        self,
        emu,
        calls: Iterator[tuple],
        go_on: Callable[[int], bool],
        pops: int = 0,
        result: int | None = None,
    ) -> bool:
        """Call each (function, arguments[, this]) of `calls` in turn, while `go_on(result)` holds for the
        result of the one before, when the current API returns; the API then returns the last result
        (or `result` when it is not None: an API whose value is not its callee's, as `CreateDialogParam`
        returns the dialog it made) and pops `pops` bytes of arguments (0 for cdecl).  False when
        nothing is called."""
        run = emu.get_current_run()
        if run is None or len(self._pending) >= MAX_NESTED:
            return False
        calls = iter(calls)
        first = next(calls, None)
        if first is None:
            return False
        ret, sp = emu.get_ret_address(), emu.get_stack_ptr()
        self._pending.append((run, calls, go_on, ret, sp, pops, result))
        self._start(emu, first[0], first[1], sp, *first[2:])
        return True

    def _start(self, emu, function: int, args: tuple[int, ...], sp: int, this: int | None = None) -> None:
        """Start `function(args)`; with `this`, as a C++ member function (thiscall: `this` in ecx on
        x86, the first argument on amd64)."""
        if this is not None and self.ptr == 8:
            args = (this, *args)
        # Four arguments at most: on amd64 all in registers (Speakeasy's set_func_args would put a fifth
        # below the home space, where the callee does not look).
        assert len(args) <= 4
        if this is not None and self.ptr == 4:
            emu.reg_write(se_arch.X86_REG_ECX, this)
        if self.ptr == 4:
            emu.set_func_args(sp, CALLBACK_RETURN, *args)
        else:
            frame = ((sp - 0x30) & ~0xF) | 8  # rsp at entry is 8 mod 16, home space below the caller's
            emu.set_func_args(frame + 0x28, CALLBACK_RETURN, *args)
        emu.set_pc(function)

    def install(self, emu) -> None:
        fetch = emu._handle_invalid_fetch

        def handle_invalid_fetch(uc, address, size, value, ctx):
            if address == CALLBACK_RETURN and self._returned(emu):
                return True
            return fetch(uc, address, size, value, ctx)

        emu._handle_invalid_fetch = handle_invalid_fetch

    def _returned(self, emu) -> bool:
        run = emu.get_current_run()
        while self._pending and self._pending[-1][0] is not run:  # left over from a run that ended
            self._pending.pop()
        if not self._pending:
            return False
        _, calls, go_on, ret, sp, pops, result = self._pending[-1]
        following = next(calls, None) if go_on(emu.reg_read(_RESULT[self.ptr])) else None
        if following is not None:
            self._start(emu, following[0], following[1], sp, *following[2:])
        else:
            self._pending.pop()
            # As the API itself would have returned, with the last callee's result or its own.
            if result is not None:
                emu.reg_write(_RESULT[self.ptr], result)
            emu.reg_write(_SP[self.ptr], sp + self.ptr + pops)
            emu.set_pc(ret)
        emu._unset_emu_hooks()  # as Speakeasy does after its own callbacks
        return True

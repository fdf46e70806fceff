"""The C runtime's x86 frame handler `_except_handler3` (Visual C++ 6 to 2003 `__try` frames).

Speakeasy dispatches an x86 exception to the handler in the thread's registration list; for the
runtime's `_except_handler4` its handler reads the frames' scope tables so that its SEH continuation
calls the `__except` filter and block of the active `__try`.  Its `_except_handler3` did nothing and
answered "continue the search": the program's filter never ran and, with no frame recorded, execution
went on at the faulting instruction.  The EH3 frame is the EH4 one without the security cookie: the
registration `{next, handler, scope table, try level, ebp}`, the scope table an array of
`{enclosing level, filter, handler}` records indexed by the try level, unencoded.  The frames are
handed to Speakeasy's continuation in the form its `_except_handler4` gives them.
"""

from __future__ import annotations

from speakeasy.winenv import arch as se_arch

CDECL = se_arch.CALL_CONV_CDECL
_MAX_FRAMES = 64  # a corrupt list ends here rather than loop


def except_handler3(emu, api_name, orig, argv):
    record, frame, context, _dispatcher = argv[:4]
    seh = emu.get_current_thread().get_seh()
    types = emu.wintypes
    ctx = emu.mem_cast(types.CONTEXT(emu.get_ptr_size()), context)
    seh.set_context(ctx, address=context)
    seh.set_record(record)
    seh.clear_frames()
    current = frame
    for _ in range(_MAX_FRAMES):
        if current in (0, 0xFFFFFFFF):
            break
        reg = emu.mem_cast(types.EXCEPTION_REGISTRATION(4), current)
        level = reg.TryLevel - (1 << 32) if reg.TryLevel & 0x80000000 else reg.TryLevel
        if level >= 0 and reg.ScopeTable:
            entry = types.EH4_SCOPETABLE_RECORD(4)
            try:
                entry = emu.mem_cast(entry, reg.ScopeTable + entry.sizeof() * level)
            except Exception:  # another handler's frame (Speakeasy's own outermost one): not ours
                entry = None
            if entry is not None:
                seh.add_frame(reg, None, [entry])
        current = reg.Next
    # As Speakeasy's `_except_handler4`: its continuation then calls each frame's filter, with the
    # registers of the faulting instruction (the real handler sets ebp to the frame's; the same when
    # the fault is in the function with the `__try`).
    return 0


def install(se) -> None:
    # ("msvcr*" matches msvcrt too; Speakeasy calls every hook whose pattern matches.)
    se.add_api_hook(except_handler3, module="msvcr*", api_name="_except_handler3", argc=4, call_conv=CDECL)


def end_unhandled(emu, code: int, at: int | None = None) -> None:
    """An exception no handler took: the process ends, with the exception as its error; `at`: where it
    was raised (by default the return address of the API being handled)."""
    caller = emu.get_ret_address() if at is None else at
    error = emu.get_error_info(f"unhandled_exception 0x{code:08x}", caller)
    emu.curr_run.error = {**error, "pc": hex(caller)}
    emu.exit_process()

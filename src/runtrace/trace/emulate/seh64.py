"""amd64 exception dispatch through the unwind tables, as Windows does it, with handlers run as emulated code.

Speakeasy hands an amd64 exception only to an unhandled-exception filter: a 64-bit program's own
`__try`/`__except` never ran, for a bad pointer, a fetch from nowhere or `RaiseException` alike.  Here
an exception is dispatched as `RtlDispatchException` does:

- the faulting context is a CONTEXT record and the exception an EXCEPTION_RECORD, written on the
  stack below the faulting frame;
- frames are unwound one by one through the function tables (`unwind.py`); a frame whose function
  has an exception handler gets its language handler called with (record, establisher frame,
  context, DISPATCHER_CONTEXT), until one continues execution or unwinds;
- MSVC's `__C_specific_handler` (the language handler of every `__try` in C) is carried out here,
  reading the function's scope table: its filters run as the program's code, with (exception
  pointers, establisher frame); a filter that accepts the exception starts the unwind
  (`RtlUnwindEx`): every frame between the fault and the handler's is unwound with its termination
  handlers (`__finally` blocks, called with (TRUE, establisher frame)) run, and the program goes on
  in the `__except` block with the target frame's registers and the exception code in rax;
- any other language handler (a statically linked `__C_specific_handler`, `__GSHandlerCheck*`,
  MinGW's) runs as emulated code; the `Rtl*` functions such handlers call (`RtlUnwindEx`,
  `RtlLookupFunctionEntry`, `RtlVirtualUnwind`, `RtlCaptureContext`, `RtlRestoreContext`,
  `RtlAddFunctionTable`, `__C_specific_handler` itself) are answered with the same machinery;
- when no frame handles the exception, the program's unhandled-exception filter runs if it set one
  (it may continue execution); otherwise the exception ends as it did before: a read or write the
  tracer lets go on (a zero page) goes on, anything else ends the entry point.

Handlers return to `SENTINEL`, an address in Speakeasy's reserved region, where the dispatch takes
its next step.  A dispatch is a generator that yields the calls it needs; nested exceptions (a
filter that faults) are dispatched in their turn below it on the stack.  C++ exceptions
(`__CxxFrameHandler*`) are not interpreted: their frames' handlers are imported functions the
emulator does not have, and such frames are passed over.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn and speakeasy)

import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
from speakeasy.common import PERM_MEM_RW
from speakeasy.windows.common import EMU_RESERVE_SIZE, EMU_RESERVED, EMU_RETURN_ADDR
from unicorn import UC_HOOK_INSN_INVALID, UC_MEM_FETCH_UNMAPPED, UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED
from unicorn import x86_const as X

from runtrace.trace.emulate import unwind
from runtrace.trace.emulate.unwind import Context, FunctionTables, UnwindError

SENTINEL = EMU_RETURN_ADDR + 3  # between Speakeasy's EXIT (+1), runtrace's callbacks (+2) and SEH (+4)

STATUS_ACCESS_VIOLATION = 0xC0000005
STATUS_GUARD_PAGE_VIOLATION = 0x80000001
STATUS_BREAKPOINT = 0x80000003
STATUS_INTEGER_DIVIDE_BY_ZERO = 0xC0000094
STATUS_ILLEGAL_INSTRUCTION = 0xC000001D
STATUS_UNWIND = 0xC0000027
EXCEPTION_NONCONTINUABLE, EXCEPTION_UNWINDING, EXCEPTION_EXIT_UNWIND = 1, 2, 4
EXCEPTION_TARGET_UNWIND = 0x20
EXCEPTION_UNWIND = 0x66
CONTINUE_EXECUTION, CONTINUE_SEARCH = 0, 1  # EXCEPTION_DISPOSITION
MAX_FRAMES = 256
MAX_SCOPES = 1024
MAX_DEPTH = 8  # exceptions raised while others are being dispatched

_GPRS = (X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_RBX, X.UC_X86_REG_RSP,
         X.UC_X86_REG_RBP, X.UC_X86_REG_RSI, X.UC_X86_REG_RDI, X.UC_X86_REG_R8, X.UC_X86_REG_R9,
         X.UC_X86_REG_R10, X.UC_X86_REG_R11, X.UC_X86_REG_R12, X.UC_X86_REG_R13, X.UC_X86_REG_R14,
         X.UC_X86_REG_R15)  # fmt: skip
_XMMS = tuple(X.UC_X86_REG_XMM0 + i for i in range(16))
_USER_SEGMENTS = (0x33, 0x2B, 0x2B, 0x53, 0x2B, 0x2B)  # cs, ds, es, fs, gs, ss of a 64-bit user thread
_C_SPECIFIC = "__C_specific_handler"
_ACCESS = {UC_MEM_READ_UNMAPPED: 0, UC_MEM_WRITE_UNMAPPED: 1, UC_MEM_FETCH_UNMAPPED: 8}


@dataclass
class _Call:
    """A call the dispatch needs made as emulated code; the generator gets back rax."""

    function: int
    args: tuple[int, ...]


@dataclass
class Resume:
    """The dispatch is over: the program goes on with these registers."""

    context: Context


UNHANDLED = object()


@dataclass
class _Task:
    steps: Generator
    area: int  # the dispatch's records and its calls' frames lie below this address
    run: object  # Speakeasy's run it belongs to
    finish: Callable[[object], None]
    context: int = 0  # a dispatch's CONTEXT record (the fault), 0 for an API's work
    expected_sp: int = 0  # the stack pointer when the current call returns to SENTINEL


@dataclass(frozen=True)
class _Records:
    """Where one dispatch keeps its structures, below `top` (16-byte aligned)."""

    top: int

    @property
    def context(self) -> int:
        return self.top - 0x4D0

    @property
    def record(self) -> int:
        return self.context - 0xA0

    @property
    def pointers(self) -> int:
        return self.record - 0x10

    @property
    def dispatcher(self) -> int:
        return self.pointers - 0x50

    @property
    def unwind_context(self) -> int:
        return self.dispatcher - 0x4D0

    @property
    def calls(self) -> int:  # the frames of the handlers it calls start here
        return (self.unwind_context - 0x40) & ~0xF


class Seh64:
    """Installed on one amd64 emulation (`install`)."""

    def __init__(self, emu) -> None:
        self.emu = emu
        self.uc = emu.emu_eng.emu
        self.tables = FunctionTables(self._read, self._images)
        self._tasks: list[_Task] = []
        self._deferred: Callable[[], None] | None = None
        self._fault: tuple[int, int] | None = None  # (unicorn access, address) of the fault being handled
        self.dispatched = 0  # exceptions dispatched to the program's handlers
        self.handled = 0  # ... that a handler took (continued or unwound)

    # -- memory -------------------------------------------------------------------------------------

    def _read(self, address: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(address, size))

    def _write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, bytes(data))

    def _u64(self, address: int) -> int:
        return struct.unpack("<Q", self._read(address, 8))[0]

    def _images(self):
        for _pe, (base, size), _path in self.emu.modules:
            yield base, size

    # -- installation -------------------------------------------------------------------------------

    def install(self) -> None:
        emu = self.emu
        fetch, hook_code, unmapped = emu._handle_invalid_fetch, emu._hook_code, emu._hook_mem_unmapped
        interrupt = emu._hook_interrupt

        def handle_invalid_fetch(uc, address, size, value, ctx):
            if address == SENTINEL and self._returned():
                return True
            return fetch(uc, address, size, value, ctx)

        def on_code(emu_, address, size, ctx):
            if self._deferred is not None:
                start, self._deferred = self._deferred, None
                start()
                if emu.get_pc() != address:
                    return True
            return hook_code(emu_, address, size, ctx)

        def mem_unmapped(emu_, access, address, size, value, ctx):
            self._fault = (access, address)
            try:
                return unmapped(emu_, access, address, size, value, ctx)
            finally:
                self._fault = None

        def hook_interrupt(emu_, intnum, ctx=[]):  # noqa: B006  (Speakeasy's signature)
            if self._interrupt(intnum):
                return True
            return interrupt(emu_, intnum, ctx)

        emu._handle_invalid_fetch, emu._hook_code = handle_invalid_fetch, on_code
        emu._hook_mem_unmapped, emu._hook_interrupt = mem_unmapped, hook_interrupt
        emu.dispatch_seh = self._speakeasy_dispatch
        self.uc.hook_add(UC_HOOK_INSN_INVALID, self._invalid_instruction)

    # -- where exceptions come from -----------------------------------------------------------------

    def guard_page_violation(self, address: int, access: int) -> bool:
        """A first touch of a guard page (guardpage.py; the guard already lifted): dispatched like an
        access violation, with STATUS_GUARD_PAGE_VIOLATION; unhandled, it ends the run."""
        if access == 8:
            return self._fetch_fault(address, STATUS_GUARD_PAGE_VIOLATION)
        return self.access_violation(address, access, go_on=False, code=STATUS_GUARD_PAGE_VIOLATION)

    def access_violation(
        self, address: int, access: int, go_on: bool, code: int = STATUS_ACCESS_VIOLATION
    ) -> bool:
        """A read or write of unmapped memory (in a memory hook): dispatched from the next instruction,
        once unicorn has finished the access (the tracer mapped a page for it).  `go_on`: when no
        handler takes it, the program goes on from there (a zero page); otherwise the run ends."""
        if self._deferred is not None:
            return True  # the same instruction faulting again
        context = self.capture()
        params = (access, address)
        if not self._has_handlers(context) and not self.emu.unhandled_exception_filter:
            return False

        def unhandled_ends_run() -> None:
            kind = {0: "invalid_read", 1: "invalid_write", 8: "invalid_fetch"}.get(access, "invalid_read")
            self._end_run(kind, address)

        def start() -> None:
            after = self.capture()  # where the program is now, the faulting access done
            fallback = (lambda: self._resume(after)) if go_on else unhandled_ends_run
            self._begin(code, params, context, fallback)

        self._deferred = start
        self.emu.enable_code_hook()
        return True

    def raise_from_api(self, argv: list) -> None:
        """RaiseException(code, flags, count, arguments), from its API handler: the context is the
        caller's, at the return address (as RtlRaiseException captures it)."""
        code, flags, count, arguments = (list(argv) + [0, 0, 0, 0])[:4]
        count = min(count, 15) if arguments else 0
        params = struct.unpack(f"<{count}Q", self._read(arguments, 8 * count)) if count else ()
        context = self._caller_context()

        def unhandled() -> None:
            caller = context.rip
            self.emu.curr_run.error = {
                **self.emu.get_error_info(f"unhandled_exception 0x{code & 0xFFFFFFFF:08x}", caller),
                "pc": hex(caller),
            }
            self.emu.exit_process()

        self._begin(code & 0xFFFFFFFF, params, context, unhandled, flags & EXCEPTION_NONCONTINUABLE)

    def _speakeasy_dispatch(self, code: int, faulting_address: int | None = None) -> bool:
        """Speakeasy's `dispatch_seh`, from its own handlers of a fault it does not let go on (a fetch
        from nowhere, a read past the zero pages): True when the program's handlers take over."""
        access = _ACCESS.get(self._fault[0], 0) if self._fault else 0
        if access == 8 and faulting_address is not None:
            return self._fetch_fault(faulting_address)
        if faulting_address is not None:
            # unicorn retries the access when the hook returns: it must find a page (Speakeasy's
            # own unhandled-exception path maps one too, and unmaps it at the next instruction)
            page = faulting_address & ~0xFFF
            if self.emu.get_address_map(page) is None:
                self.emu.mem_map(0x1000, base=page)
                self.emu.tmp_maps.append((page, 0x1000))
            return self.access_violation(faulting_address, access, go_on=False)
        context = self.capture()
        if not self._has_handlers(context):
            return self._unhandled_filter_only(code, context)
        self._begin(
            code, (), context, lambda: self._end_run(f"unhandled_exception 0x{code:08x}", context.rip)
        )
        return True

    def _fetch_fault(self, address: int, code: int = STATUS_ACCESS_VIOLATION) -> bool:
        """A jump or call to unmapped memory: the context is the jump's target (as Windows reports
        it); dispatched at once (the fetch never happens)."""
        context = self.capture()
        context.rip = address
        if not self._has_handlers(context) and not self.emu.unhandled_exception_filter:
            return False
        # unicorn fetches from the address again when the hook returns, and stops the emulation if
        # that fails, whatever the program counter is by then: a page must be there (not executable:
        # nothing runs from it; unmapped again at the next instruction).
        page = address & ~0xFFF
        if self.emu.get_address_map(page) is None:
            self.emu.emu_eng.mem_map(page, 0x1000, perms=PERM_MEM_RW)
            self.emu.tmp_maps.append((page, 0x1000))
        self._begin(code, (8, address), context, lambda: self._end_run("invalid_fetch", address))
        return True

    def _unhandled_filter_only(self, code: int, context: Context, params: tuple = ()) -> bool:
        if not self.emu.unhandled_exception_filter:
            return False
        self._begin(
            code, params, context, lambda: self._end_run(f"unhandled_exception 0x{code:08x}", context.rip)
        )
        return True

    def _interrupt(self, intnum: int) -> bool:
        """int3 (a breakpoint) and a division by zero, from unicorn's interrupt hook."""
        if intnum not in (0, 3):
            return False
        context = self.capture()
        code = STATUS_INTEGER_DIVIDE_BY_ZERO if intnum == 0 else STATUS_BREAKPOINT
        if intnum == 3:
            context.rip -= 1  # Windows reports a breakpoint at the int3, not after it
        if not self._has_handlers(context) and not self.emu.unhandled_exception_filter:
            return False
        self._begin(
            code, (), context, lambda: self._end_run(f"unhandled_exception 0x{code:08x}", context.rip)
        )
        return True

    def _invalid_instruction(self, uc, user_data) -> bool:
        try:
            context = self.capture()
            if not self._has_handlers(context) and not self.emu.unhandled_exception_filter:
                return False
            rip, code = context.rip, STATUS_ILLEGAL_INSTRUCTION
            self._begin(code, (), context, lambda: self._end_run(f"unhandled_exception 0x{code:08x}", rip))
            return True
        except Exception:
            return False

    # -- the dispatch -------------------------------------------------------------------------------

    def _has_handlers(self, context: Context) -> bool:
        """Whether any frame of the stack has an exception handler (unwinding in Python only)."""
        ctx = context.copy()
        try:
            for _ in range(MAX_FRAMES):
                found = self.tables.lookup(ctx.rip)
                if found is None:
                    if not self._leaf(ctx):
                        return False
                    continue
                base, entry = found
                handler, _data, frame = unwind.virtual_unwind(
                    self._read, unwind.UNW_FLAG_EHANDLER, base, ctx.rip, entry, ctx
                )
                if handler:
                    return True
                if not self._on_stack(frame):
                    return False
        except Exception:
            return False
        return False

    def _begin(
        self, code: int, params: tuple, context: Context, fallback: Callable[[], None], flags: int = 0
    ):
        if len(self._tasks) >= MAX_DEPTH:
            fallback()
            return
        records = _Records((context.rsp - 0x100) & ~0xF)
        try:
            self._write_record(records.record, code, flags, context.rip, params)
            self._write(records.context, context.data)
            self._write(records.pointers, struct.pack("<QQ", records.record, records.context))
        except Exception:
            fallback()
            return
        self.dispatched += 1

        def finish(outcome) -> None:
            if isinstance(outcome, Resume):
                self.handled += 1
                self._resume(outcome.context)
            else:
                fallback()

        self._start(self._dispatch(records, context), records.calls, finish, records.context)

    def _dispatch(self, records: _Records, fault: Context) -> Generator:
        ctx = fault.copy()
        for _ in range(MAX_FRAMES):
            pc = ctx.rip
            found = self.tables.lookup(pc)
            if found is None:
                if not self._leaf(ctx):
                    break
                continue
            base, entry = found
            handler, data, frame = unwind.virtual_unwind(
                self._read, unwind.UNW_FLAG_EHANDLER, base, pc, entry, ctx
            )
            if not self._on_stack(frame):
                break
            if not handler:
                continue
            self._write_dispatcher(
                records.dispatcher, pc, base, entry, frame, 0, records.context, handler, data
            )
            result = yield from self._language_handler(handler, records, frame, records.context)
            if isinstance(result, Resume) or result is UNHANDLED:
                return result
            if result == CONTINUE_EXECUTION:
                if self._record_flags(records.record) & EXCEPTION_NONCONTINUABLE:
                    break
                return Resume(Context(self._read(records.context, unwind.CONTEXT_SIZE)))
        # No frame took it: the unhandled-exception filter, if the program set one.
        uef = self.emu.unhandled_exception_filter
        if uef:
            self.emu.unhandled_exception_filter = 0  # as Speakeasy: called once
            verdict = _signed32((yield _Call(uef, (records.pointers,))))
            if verdict == -1:  # EXCEPTION_CONTINUE_EXECUTION
                return Resume(Context(self._read(records.context, unwind.CONTEXT_SIZE)))
        return UNHANDLED

    def _language_handler(
        self, handler: int, records: _Records, frame: int, context_address: int
    ) -> Generator:
        if self._is_c_specific_handler(handler):
            return (
                yield from self._c_specific(
                    records.record, frame, context_address, records.dispatcher, records
                )
            )
        disposition = yield _Call(handler, (records.record, frame, context_address, records.dispatcher))
        return disposition & 0xFFFFFFFF

    def _c_specific(
        self, record: int, frame: int, context_address: int, dispatcher: int, records: _Records
    ) -> Generator:
        """MSVC's `__C_specific_handler` over the function's scope table (handler data: a count, then
        {BeginAddress, EndAddress, HandlerAddress, JumpTarget} RVAs per `__try`, innermost first)."""
        code, flags = struct.unpack("<II", self._read(record, 8))
        control_pc, base, _entry, _frame, target_ip, _ctx, _handler, data = struct.unpack(
            "<8Q", self._read(dispatcher, 64)
        )
        scope_index = struct.unpack("<I", self._read(dispatcher + 0x48, 4))[0]
        count = min(struct.unpack("<I", self._read(data, 4))[0], MAX_SCOPES)
        scopes = list(struct.iter_unpack("<4I", self._read(data + 4, 16 * count))) if count else []
        pc = control_pc - base
        if not flags & EXCEPTION_UNWIND:
            for begin, end, filter_rva, target in scopes[scope_index:]:
                if not (begin <= pc < end and target):
                    continue
                if filter_rva == 1:  # EXCEPTION_EXECUTE_HANDLER as a constant
                    verdict = 1
                else:
                    verdict = _signed32((yield _Call(base + filter_rva, (records.pointers, frame))))
                if verdict < 0:
                    return CONTINUE_EXECUTION
                if verdict > 0:
                    start = Context(self._read(context_address, unwind.CONTEXT_SIZE))
                    return (yield from self._unwind(frame, base + target, record, code, start, records))
            return CONTINUE_SEARCH
        target_pc = target_ip - base
        for i, (begin, end, handler_rva, target) in enumerate(scopes[scope_index:], scope_index):
            if not begin <= pc < end:
                continue
            if flags & EXCEPTION_TARGET_UNWIND and any(
                b <= target_pc < e and t == target and h == handler_rva for b, e, h, t in scopes
            ):
                break  # the unwind's target is inside a scope of this one: nothing further to end
            if target:
                if target_pc == target and flags & EXCEPTION_TARGET_UNWIND:
                    break  # reached the __except block being unwound to
                continue
            self._write(dispatcher + 0x48, struct.pack("<I", i + 1))  # a termination handler runs once
            yield _Call(base + handler_rva, (1, frame))  # __finally, abnormal termination
        return CONTINUE_SEARCH

    def _unwind(
        self, target_frame: int, target_ip: int, record: int, value: int, start: Context, records: _Records
    ) -> Generator:
        """RtlUnwindEx: unwind from `start` to the frame `target_frame`, calling the termination
        handlers on the way, then resume there at `target_ip` with `value` in rax."""
        flags = self._record_flags(record) | EXCEPTION_UNWINDING
        self._write(record + 4, struct.pack("<I", flags))
        ctx = start.copy()
        for _ in range(MAX_FRAMES):
            pc = ctx.rip
            found = self.tables.lookup(pc)
            if found is None:
                if not self._leaf(ctx):
                    break
                continue
            base, entry = found
            before = ctx.copy()
            handler, data, frame = unwind.virtual_unwind(
                self._read, unwind.UNW_FLAG_UHANDLER, base, pc, entry, ctx
            )
            if frame == target_frame:
                flags |= EXCEPTION_TARGET_UNWIND
                self._write(record + 4, struct.pack("<I", flags))
            if handler:
                self._write(records.unwind_context, before.data)
                self._write_dispatcher(
                    records.dispatcher,
                    pc,
                    base,
                    entry,
                    frame,
                    target_ip,
                    records.unwind_context,
                    handler,
                    data,
                )
                result = yield from self._language_handler(handler, records, frame, records.unwind_context)
                if isinstance(result, Resume):
                    return result
            if frame == target_frame:
                before.rip = target_ip
                before.set_reg(0, value)
                return Resume(before)
            if frame > target_frame or not self._on_stack(frame):
                break
        return UNHANDLED

    # -- calling the program's handlers --------------------------------------------------------------

    def _start(self, steps: Generator, area: int, finish: Callable[[object], None], context: int = 0) -> None:
        task = _Task(steps, area, self.emu.get_current_run(), finish, context)
        self._tasks.append(task)
        self._advance(task, None)

    def _advance(self, task: _Task, value) -> None:
        try:
            call = task.steps.send(value)
        except StopIteration as done:
            self._pop(task)
            task.finish(done.value)
            return
        except (UnwindError, Exception):  # unreadable unwind data or stack: as if nobody handled it
            self._pop(task)
            task.finish(UNHANDLED)
            return
        uc = self.uc
        sp = task.area - 0x28  # a return address and the 32-byte home space: rsp is 8 mod 16 at entry
        try:
            self._write(sp, struct.pack("<Q", SENTINEL))
        except Exception:
            self._pop(task)
            task.finish(UNHANDLED)
            return
        args = (list(call.args) + [0, 0, 0, 0])[:4]
        for reg, arg in zip(
            (X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_R8, X.UC_X86_REG_R9), args, strict=True
        ):
            uc.reg_write(reg, arg & 0xFFFFFFFFFFFFFFFF)
        uc.reg_write(X.UC_X86_REG_RSP, sp)
        eflags = uc.reg_read(X.UC_X86_REG_EFLAGS)
        uc.reg_write(X.UC_X86_REG_EFLAGS, eflags & ~0x400)  # the direction flag is clear at a call
        task.expected_sp = sp + 8
        self.emu.set_pc(call.function)

    def _pop(self, task: _Task) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    def _returned(self) -> bool:
        """A handler returned to SENTINEL: the dispatch that called it takes its next step."""
        run = self.emu.get_current_run()
        self._tasks = [t for t in self._tasks if t.run is run]
        sp = self.uc.reg_read(X.UC_X86_REG_RSP)
        for i in range(len(self._tasks) - 1, -1, -1):
            task = self._tasks[i]
            if task.expected_sp == sp:
                del self._tasks[i + 1 :]  # calls above it were left (a longjmp out of a handler)
                self._advance(task, self.uc.reg_read(X.UC_X86_REG_RAX))
                return True
        return False

    def _resume(self, context: Context) -> None:
        # Dispatches whose records lie below the resumed stack are over (abandoned by the unwind).
        self._tasks = [t for t in self._tasks if t.area > context.rsp]
        self.restore(context)
        self.emu.disable_code_hook()

    # -- registers ----------------------------------------------------------------------------------

    def capture(self) -> Context:
        uc, ctx = self.uc, Context()
        for n, reg in enumerate(_GPRS):
            ctx.set_reg(n, uc.reg_read(reg))
        ctx.rip = uc.reg_read(X.UC_X86_REG_RIP)
        ctx.eflags = uc.reg_read(X.UC_X86_REG_EFLAGS)
        ctx.mxcsr = uc.reg_read(X.UC_X86_REG_MXCSR)
        for n, reg in enumerate(_XMMS):
            ctx.set_xmm(n, uc.reg_read(reg).to_bytes(16, "little"))
        ctx.set_segments(_USER_SEGMENTS)
        return ctx

    def restore(self, ctx: Context) -> None:
        uc = self.uc
        for n, reg in enumerate(_GPRS):
            uc.reg_write(reg, ctx.reg(n))
        uc.reg_write(X.UC_X86_REG_EFLAGS, ctx.eflags)
        for n, reg in enumerate(_XMMS):
            uc.reg_write(reg, int.from_bytes(ctx.xmm(n), "little"))
        self.emu.set_pc(ctx.rip)

    def _caller_context(self) -> Context:
        """The context of an API's caller at the return address (the API's frame popped)."""
        ctx = self.capture()
        ctx.rip = self._u64(ctx.rsp)
        ctx.rsp += 8
        return ctx

    # -- helpers ------------------------------------------------------------------------------------

    def _leaf(self, ctx: Context) -> bool:
        """Unwind a frame without unwind data (a leaf function): the return address is at [rsp].
        False when that is not a frame of the program's (the run's own return, the reserved region,
        an unreadable stack)."""
        if not self._on_stack(ctx.rsp):
            return False
        try:
            rip = self._u64(ctx.rsp)
        except Exception:
            return False
        if rip == 0 or EMU_RESERVED <= rip < EMU_RESERVED + EMU_RESERVE_SIZE or not self._mapped(rip):
            return False
        ctx.rip, ctx.rsp = rip, ctx.rsp + 8
        return True

    def _mapped(self, address: int) -> bool:
        return self.emu.get_address_map(address) is not None

    def _on_stack(self, address: int) -> bool:
        if address & 7:
            return False
        stack = self.emu.get_address_map(self.uc.reg_read(X.UC_X86_REG_RSP))
        if stack is None:
            return self._mapped(address)
        return stack.base <= address < stack.base + stack.size

    def _is_c_specific_handler(self, handler: int) -> bool:
        """Whether the handler is the C runtime's or ntdll's `__C_specific_handler`: an import thunk
        (`jmp [rip + slot]`) whose slot holds that import."""
        try:
            code = self._read(handler, 6)
            if code[:2] != b"\xff\x25":
                return False
            target = self._u64(handler + 6 + struct.unpack("<i", code[2:])[0])
        except Exception:
            return False
        return self._import_name(target) == _C_SPECIFIC

    def _import_name(self, address: int) -> str:
        emu = self.emu
        modules = [pe for pe, _, _ in emu.modules]
        for pe in modules:
            found = getattr(pe, "import_table", {}).get(address)
            if found:
                return found[1]
        for addr, _mod, name in emu.dyn_imps:
            if addr == address:
                return name
        return ""

    def _record_flags(self, record: int) -> int:
        return struct.unpack("<I", self._read(record + 4, 4))[0]

    def _write_record(self, address: int, code: int, flags: int, where: int, params: tuple) -> None:
        params = tuple(params)[:15]
        data = struct.pack("<IIQQI4x", code, flags, 0, where, len(params))
        data += struct.pack(f"<{len(params)}Q", *params) + bytes(8 * (15 - len(params)))
        self._write(address, data)

    def _write_dispatcher(
        self, address, pc, base, entry, frame, target_ip, context_address, handler, data
    ) -> None:
        self._write(
            address,
            struct.pack(
                "<8QQII", pc, base, entry.address, frame, target_ip, context_address, handler, data, 0, 0, 0
            ),
        )

    def _end_run(self, kind: str, address: int) -> None:
        emu = self.emu
        # Where the exception was raised, not where the dispatch stands when it gives up (a handler's
        # return to SENTINEL, which the run's error reported as its address).
        emu.curr_run.error = {**emu.get_error_info(kind, address), "pc": hex(address)}
        emu.on_run_complete()

    # -- the Rtl* functions and __C_specific_handler, for handlers that run as emulated code ---------

    def register_apis(self, register: Callable[[str, str, int, Callable[[list], object]], None]) -> None:
        """`register(module, name, argc, fn)` files `fn(argv)` as the emulator's handler of an API."""
        for module in ("ntdll", "kernel32"):
            register(module, "RtlUnwindEx", 6, self._api_unwind)
            register(module, "RtlUnwind", 4, self._api_unwind)
            register(module, "RtlLookupFunctionEntry", 3, self._api_lookup)
            register(module, "RtlVirtualUnwind", 8, self._api_virtual_unwind)
            register(module, "RtlCaptureContext", 1, self._api_capture)
            register(module, "RtlRestoreContext", 2, self._api_restore)
            register(module, "RtlAddFunctionTable", 3, self._api_add_table)
            register(module, "RtlDeleteFunctionTable", 1, self._api_delete_table)
            register(module, "RtlRaiseException", 1, self._api_raise)
        for module in ("ntdll", "msvcrt"):  # msvcrt: every C runtime's (vcruntime140, ucrtbase, ...)
            register(module, _C_SPECIFIC, 4, self._api_c_specific)

    def _api_task(self, steps: Generator, on_unhandled: int) -> int:
        """Run `steps` for an API: its result is what the API returns to its caller, a Resume goes
        on elsewhere.  The API returns only when the steps are done (they may call handlers)."""
        sp = self.uc.reg_read(X.UC_X86_REG_RSP)
        ret = self._u64(sp)
        records = _Records((sp - 0x100) & ~0xF)

        def finish(outcome) -> None:
            if isinstance(outcome, Resume):
                self._resume(outcome.context)
                return
            value = on_unhandled if outcome is UNHANDLED or outcome is None else outcome
            self.uc.reg_write(X.UC_X86_REG_RAX, value & 0xFFFFFFFFFFFFFFFF)
            self.uc.reg_write(X.UC_X86_REG_RSP, sp + 8)
            self.emu.set_pc(ret)

        self._start(steps(records), records.calls, finish)
        return 0

    def _fault_context(self) -> Context:
        """The context an unwind started by a handler begins from: the fault being dispatched (the
        handler's own frames and the dispatcher's are not the program's), else the API's caller."""
        for task in reversed(self._tasks):
            if task.context:
                return Context(self._read(task.context, unwind.CONTEXT_SIZE))
        return self._caller_context()

    def _api_unwind(self, argv: list) -> int:
        target_frame, target_ip, record, value = (list(argv) + [0] * 4)[:4]
        start = self._fault_context()

        def steps(records: _Records) -> Generator:
            rec = record
            if not rec:
                rec = records.record
                self._write_record(rec, STATUS_UNWIND, EXCEPTION_UNWINDING, target_ip, ())
            if not target_frame:
                self._write(rec + 4, struct.pack("<I", self._record_flags(rec) | EXCEPTION_EXIT_UNWIND))
            return (yield from self._unwind(target_frame, target_ip, rec, value, start, records))

        return self._api_task(steps, 0)

    def _api_c_specific(self, argv: list) -> int:
        record, frame, context_address, dispatcher = (list(argv) + [0] * 4)[:4]

        def steps(records: _Records) -> Generator:
            # The filters get exception pointers to the record and context they were given.
            self._write(records.pointers, struct.pack("<QQ", record, context_address))
            return (yield from self._c_specific(record, frame, context_address, dispatcher, records))

        return self._api_task(steps, CONTINUE_SEARCH)

    def _api_lookup(self, argv: list) -> int:
        pc, p_base = argv[0], argv[1]
        found = self.tables.lookup(pc)
        if found is None:
            return 0
        base, entry = found
        if p_base:
            self._write(p_base, struct.pack("<Q", base))
        return entry.address

    def _api_virtual_unwind(self, argv: list) -> int:
        kind, base, pc, entry_address, context_address, p_data, p_frame = (list(argv) + [0] * 8)[:7]
        try:
            begin, end, unwind_rva = struct.unpack("<3I", self._read(entry_address, 12))
            entry = unwind.FunctionEntry(entry_address, base + begin, base + end, base + unwind_rva)
            ctx = Context(self._read(context_address, unwind.CONTEXT_SIZE))
            handler, data, frame = unwind.virtual_unwind(self._read, kind, base, pc, entry, ctx)
            self._write(context_address, ctx.data)
            if p_data:
                self._write(p_data, struct.pack("<Q", data))
            if p_frame:
                self._write(p_frame, struct.pack("<Q", frame))
        except Exception:  # unreadable or invalid unwind data: no handler
            return 0
        return handler

    def _api_capture(self, argv: list) -> int:
        if argv and argv[0]:
            self._write(argv[0], self._caller_context().data)
        return 0

    def _api_restore(self, argv: list) -> int:
        context = Context(self._read(argv[0], unwind.CONTEXT_SIZE))
        self._resume(context)
        return 0

    def _api_add_table(self, argv: list) -> int:
        try:
            self.tables.add_dynamic(argv[0], argv[1], argv[2])
        except Exception:
            return 0
        return 1

    def _api_delete_table(self, argv: list) -> int:
        return int(self.tables.remove_dynamic(argv[0]))

    def _api_raise(self, argv: list) -> int:
        record = argv[0]
        code, flags, _next, _address, count = struct.unpack("<IIQQI", self._read(record, 28))
        count = min(count, 15)
        params = struct.unpack(f"<{count}Q", self._read(record + 0x20, 8 * count)) if count else ()
        arguments = record + 0x20
        self.raise_from_api([code, flags, len(params), arguments if params else 0])
        return 0


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def install(emu) -> Seh64:
    seh = Seh64(emu)
    seh.install()
    return seh

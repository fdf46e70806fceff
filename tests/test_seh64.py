"""amd64 exception dispatch through the unwind tables (seh64.py, unwind.py): a 64-bit program's own
`__try`/`__except` and `__finally` run, for faults, fetches from nowhere, breakpoints and RaiseException.

The programs are small PEs written here (tests/emu_pe.py lays out the image and its `.pdata`/`.xdata`,
tests/asm64.py places the hand-assembled instructions); each `__except` block and filter calls an API
that says it ran.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from asm64 import (
    UNW_FLAG_EHANDLER,
    UNW_FLAG_UHANDLER,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_NONVOL,
    Code,
    runtime_function,
    scope_table,
    unwind_info,
)
from emu_pe import DATA_RVA, Layout, program
from runtrace.trace.emulate import unwind
from runtrace.trace.emulate.emulator import TracerSettings, emulate
from runtrace.trace.model import StopReason
from trace_truth import witnessed_run

K32 = "kernel32.dll"
IMPORTS = {
    K32: ["GetCurrentProcessId", "GetTickCount", "GetCurrentThreadId", "GetVersion", "RaiseException",
          "RtlUnwindEx", "SetUnhandledExceptionFilter"],
    "msvcrt.dll": ["__C_specific_handler"],
}  # fmt: skip
BAD = 0x0000000123450000  # nothing is mapped there
SUB_RSP_28 = b"\x48\x83\xec\x28"  # sub rsp, 0x28
ADD_RSP_28 = b"\x48\x83\xc4\x28"  # add rsp, 0x28
# A function whose prolog is `sub rsp, 0x28`: ALLOC_SMALL of (4 + 1) * 8 bytes, after its 4 bytes.
ALLOC_28 = [(4, UWOP_ALLOC_SMALL, 4)]

Function = tuple[str, str, Callable[[Code, int], bytes]]  # begin label, end label, its UNWIND_INFO


def seh_program(write: Callable[[Code, Layout], list[Function]]) -> bytes:
    """An amd64 EXE whose code `write` emits (entry point first); the functions it returns get
    RUNTIME_FUNCTION entries and their UNWIND_INFO in `.pdata` / `.xdata`."""
    built: dict = {}

    def code(lay: Layout) -> bytes:
        c = Code(lay.text)
        built["functions"] = write(c, lay)
        built["code"] = c
        return c.assemble()

    def tables(lay: Layout) -> tuple[bytes, bytes]:
        c, pdata, xdata = built["code"], b"", b""
        for begin, end, info in built["functions"]:
            pdata += runtime_function(
                c.rva(begin, lay.base), c.rva(end, lay.base), DATA_RVA + 0x100 + len(xdata)
            )
            xdata += info(c, lay.base)
            xdata += bytes(-len(xdata) % 4)
        return pdata, xdata

    return program("amd64", code, IMPORTS, unwind=tables)


def call(c: Code, lay: Layout, name: str, dll: str = K32) -> None:
    c.rel32(b"\xff\x15", lay.slot(dll, name))  # call qword ptr [rip + slot]


def c_specific_thunk(c: Code, lay: Layout) -> None:
    c.align(16)
    c.label("c_specific")
    c.rel32(b"\xff\x25", lay.slot("msvcrt.dll", "__C_specific_handler"))  # jmp qword ptr [rip + slot]


def guarded_main(
    c: Code, lay: Layout, guarded: bytes | Callable[[], None], filter_label: str | int
) -> Function:
    """main: __try { guarded } __except (filter) { GetTickCount(); } then GetCurrentProcessId() after
    the __try."""
    c.label("main")
    c.emit(SUB_RSP_28)
    c.label("try")
    guarded() if callable(guarded) else c.emit(guarded)
    c.emit(b"\x90")  # nop: the end of the __try is after the last instruction that can fault
    c.label("try_end")
    call(c, lay, "GetCurrentProcessId")  # the __try completed
    c.emit(b"\xeb\x06")  # jmp done (over the 6-byte call)
    c.label("except")
    call(c, lay, "GetTickCount")  # the __except block
    c.label("done")
    c.emit(ADD_RSP_28 + b"\xc3")  # add rsp, 0x28; ret
    c.label("main_end")

    def info(c: Code, base: int) -> bytes:
        handler = filter_label if isinstance(filter_label, int) else c.rva(filter_label, base)
        scopes = scope_table([(c.rva("try", base), c.rva("try_end", base), handler, c.rva("except", base))])
        return unwind_info(4, ALLOC_28, UNW_FLAG_EHANDLER, c.rva("c_specific", base), scopes)

    return ("main", "main_end", info)


def access_violation_filter(c: Code) -> None:
    """filter(pointers, frame): 1 (execute the handler) for an access violation, else 0."""
    c.align(16)
    c.label("filter")
    c.emit(b"\x48\x8b\x01")  # mov rax, [rcx]              ; ExceptionRecord
    c.emit(b"\x81\x38\x05\x00\x00\xc0")  # cmp dword [rax], 0xC0000005
    c.emit(b"\x0f\x94\xc0")  # sete al
    c.emit(b"\x0f\xb6\xc0")  # movzx eax, al
    c.emit(b"\xc3")  # ret


def names(trace) -> list[str]:
    return [c.name.split(".", 1)[1] for c in trace.api_calls]


def visited(trace, address: int) -> bool:
    return any(b.address == address for b in trace.blocks)


def test_a_bad_read_in_a_try_runs_the_filter_then_the_except_block():
    def write(c: Code, lay: Layout) -> list[Function]:
        main = guarded_main(c, lay, b"\x48\xa1" + struct.pack("<Q", BAD), "filter")  # mov rax, [BAD]
        access_violation_filter(c)
        c_specific_thunk(c, lay)
        return [main]

    data = seh_program(write)
    trace = emulate(data, "x", "av")
    assert names(trace) == ["GetTickCount"]
    assert trace.meta.stop_reason is StopReason.EXITED
    filter_address = 0x140000000 + 0x1000 + 0x30  # the filter is aligned to 16 after main
    assert visited(trace, filter_address)
    # What unicorn executed is what the trace holds, redirections and all.
    run = witnessed_run(data, TracerSettings())
    assert run.recorded == run.witnessed


def _declining_filter(guarded: bytes):
    """A program whose `__try` runs `guarded` under a filter that answers EXCEPTION_CONTINUE_SEARCH."""

    def write(c: Code, lay: Layout) -> list[Function]:
        main = guarded_main(c, lay, guarded, "filter")
        c.align(16)
        c.label("filter")
        c.emit(b"\x31\xc0\xc3")  # xor eax, eax; ret   ; EXCEPTION_CONTINUE_SEARCH
        c_specific_thunk(c, lay)
        return [main]

    return seh_program(write)


def test_a_filter_that_declines_leaves_the_read_to_the_zero_page_as_before():
    trace = emulate(_declining_filter(b"\x48\xa1" + struct.pack("<Q", BAD)), "x", "declined")
    assert names(trace) == ["GetCurrentProcessId"]  # the __try completed, on a zero page
    assert trace.meta.stop_reason is StopReason.EXITED
    assert any(e["type"] == "zero_pages" for e in trace.meta.events)


def test_an_exception_no_filter_takes_ends_the_run_naming_where_it_was_raised():
    trace = emulate(_declining_filter(b"\xcc"), "x", "unhandled")  # int3 in the __try
    int3 = 0x140000000 + 0x1000 + 4  # after main's sub rsp, 0x28
    # The int3's address, not that of the dispatch's return from the declining filter.
    assert f"unhandled_exception 0x80000003 at {int3:#x}" in trace.meta.stop_detail


def test_raise_exception_unwinds_through_a_finally_to_the_except_block():
    """main: __try { inner(); } __except (filter) {...}; inner: __try { RaiseException } __finally {...}.
    Windows' order: the filter (search), then the __finally (unwind), then the __except block."""

    def write(c: Code, lay: Layout) -> list[Function]:
        main = guarded_main(c, lay, lambda: c.rel32(b"\xe8", "inner"), "filter")  # call inner
        c.align(16)
        c.label("inner")
        c.emit(SUB_RSP_28)
        c.label("inner_try")
        c.emit(b"\xb9\x01\x00\x00\xe0")  # mov ecx, 0xE0000001
        c.emit(b"\x31\xd2")  # xor edx, edx
        c.emit(b"\x45\x31\xc0")  # xor r8d, r8d
        c.emit(b"\x45\x31\xc9")  # xor r9d, r9d
        call(c, lay, "RaiseException")
        c.emit(b"\x90")  # nop
        c.label("inner_try_end")
        c.emit(ADD_RSP_28 + b"\xc3")
        c.label("inner_end")
        c.align(16)
        c.label("finally")  # the __finally block, called as (abnormal, frame)
        c.emit(SUB_RSP_28)
        call(c, lay, "GetCurrentThreadId")
        c.emit(ADD_RSP_28 + b"\xc3")
        c.align(16)
        c.label("filter")
        c.emit(b"\x53")  # push rbx
        c.emit(b"\x48\x83\xec\x20")  # sub rsp, 0x20
        c.emit(b"\x48\x8b\x01")  # mov rax, [rcx]           ; ExceptionRecord
        c.emit(b"\x8b\x18")  # mov ebx, [rax]               ; its code
        call(c, lay, "GetVersion")  # says the filter ran
        c.emit(b"\x31\xc0")  # xor eax, eax
        c.emit(b"\x81\xfb\x01\x00\x00\xe0")  # cmp ebx, 0xE0000001
        c.emit(b"\x0f\x94\xc0")  # sete al
        c.emit(b"\x48\x83\xc4\x20")  # add rsp, 0x20
        c.emit(b"\x5b\xc3")  # pop rbx; ret
        c_specific_thunk(c, lay)

        def inner_info(c: Code, base: int) -> bytes:
            scopes = scope_table(
                [(c.rva("inner_try", base), c.rva("inner_try_end", base), c.rva("finally", base), 0)]
            )
            flags = UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER
            return unwind_info(4, ALLOC_28, flags, c.rva("c_specific", base), scopes)

        return [main, ("inner", "inner_end", inner_info)]

    trace = emulate(seh_program(write), "x", "raise")
    assert names(trace) == ["RaiseException", "GetVersion", "GetCurrentThreadId", "GetTickCount"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_a_filter_can_repair_the_context_and_continue_execution():
    def write(c: Code, lay: Layout) -> list[Function]:
        def guarded() -> None:
            c.emit(b"\x48\xbb" + struct.pack("<Q", BAD))  # mov rbx, BAD
            c.emit(b"\x48\x8b\x03")  # mov rax, [rbx]         ; faults; the filter points rbx at 42
            c.emit(b"\x48\x3d\x2a\x00\x00\x00")  # cmp rax, 42
            c.emit(b"\x75\x06")  # jne +6
            call(c, lay, "GetVersion")  # read 42 after the repair

        main = guarded_main(c, lay, guarded, "filter")
        c.align(16)
        c.label("filter")
        c.emit(b"\x48\x8b\x41\x08")  # mov rax, [rcx + 8]    ; ContextRecord
        c.rel32(b"\x48\x8d\x15", "value")  # lea rdx, [rip + value]
        c.emit(b"\x48\x89\x90\x90\x00\x00\x00")  # mov [rax + 0x90], rdx  ; Context.Rbx
        c.emit(b"\xb8\xff\xff\xff\xff\xc3")  # mov eax, -1 (EXCEPTION_CONTINUE_EXECUTION); ret
        c.align(8)
        c.label("value")
        c.emit(struct.pack("<Q", 42))
        c_specific_thunk(c, lay)
        return [main]

    trace = emulate(seh_program(write), "x", "continue")
    assert names(trace) == ["GetVersion", "GetCurrentProcessId"]
    assert trace.meta.stop_reason is StopReason.EXITED


@pytest.mark.parametrize(
    "guarded",
    [
        b"\x48\xb8" + struct.pack("<Q", BAD) + b"\xff\xd0",  # mov rax, BAD; call rax  (a fetch from nowhere)
        b"\xcc",  # int3
        b"\x31\xc9\xf7\xf1",  # xor ecx, ecx; div ecx
    ],
    ids=["fetch", "breakpoint", "divide_by_zero"],
)
def test_other_exceptions_reach_an_except_1_block(guarded):
    def write(c: Code, lay: Layout) -> list[Function]:
        main = guarded_main(c, lay, guarded, 1)  # __except (EXCEPTION_EXECUTE_HANDLER)
        c_specific_thunk(c, lay)
        return [main]

    trace = emulate(seh_program(write), "x", "other")
    assert names(trace) == ["GetTickCount"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_a_language_handler_of_the_programs_own_unwinds_with_rtl_unwind_ex():
    """A handler that is the program's code (as a statically linked one is) gets (record, frame,
    context, dispatcher context) and ends the search with RtlUnwindEx, which never returns."""

    def write(c: Code, lay: Layout) -> list[Function]:
        c.label("main")
        c.emit(b"\x53")  # push rbx
        c.emit(b"\x48\x83\xec\x20")  # sub rsp, 0x20
        c.label("body")
        c.emit(b"\x48\xa1" + struct.pack("<Q", BAD))  # mov rax, [BAD]
        call(c, lay, "GetCurrentProcessId")  # not reached
        c.label("target")
        call(c, lay, "GetTickCount")
        c.emit(b"\x48\x83\xc4\x20\x5b\xc3")  # add rsp, 0x20; pop rbx; ret
        c.label("main_end")
        c.align(16)
        c.label("handler")
        c.emit(b"\x48\x83\xec\x38")  # sub rsp, 0x38
        c.emit(b"\x4c\x89\x44\x24\x20")  # mov [rsp + 0x20], r8   ; ContextRecord
        c.emit(b"\x48\xc7\x44\x24\x28\x00\x00\x00\x00")  # mov qword [rsp + 0x28], 0  ; HistoryTable
        c.emit(b"\x49\x89\xc8")  # mov r8, rcx                 ; ExceptionRecord
        c.emit(b"\x48\x89\xd1")  # mov rcx, rdx                ; TargetFrame: the establisher frame
        c.rel32(b"\x48\x8d\x15", "target")  # lea rdx, [rip + target]  ; TargetIp
        c.emit(b"\x45\x31\xc9")  # xor r9d, r9d                ; ReturnValue
        call(c, lay, "RtlUnwindEx")
        c.emit(b"\xcc")  # int3: RtlUnwindEx does not return

        def info(c: Code, base: int) -> bytes:
            codes = [(5, UWOP_ALLOC_SMALL, 3), (1, UWOP_PUSH_NONVOL, 3)]  # sub rsp, 0x20 after push rbx
            return unwind_info(5, codes, UNW_FLAG_EHANDLER, c.rva("handler", base))

        return [("main", "main_end", info)]

    trace = emulate(seh_program(write), "x", "rtlunwind")
    assert names(trace) == ["RtlUnwindEx", "GetTickCount"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_an_unhandled_exception_filter_runs_when_no_frame_takes_the_exception():
    def write(c: Code, lay: Layout) -> list[Function]:
        c.label("main")
        c.emit(SUB_RSP_28)
        c.rel32(b"\x48\x8d\x0d", "uef")  # lea rcx, [rip + uef]
        call(c, lay, "SetUnhandledExceptionFilter")
        c.emit(b"\xb9\x02\x00\x00\xe0")  # mov ecx, 0xE0000002
        c.emit(b"\x31\xd2\x45\x31\xc0\x45\x31\xc9")  # xor edx, edx; xor r8d, r8d; xor r9d, r9d
        call(c, lay, "RaiseException")
        call(c, lay, "GetTickCount")  # after the filter continued execution
        c.emit(ADD_RSP_28 + b"\xc3")
        c.label("main_end")
        c.align(16)
        c.label("uef")
        c.emit(SUB_RSP_28)
        call(c, lay, "GetVersion")
        c.emit(ADD_RSP_28)
        c.emit(b"\xb8\xff\xff\xff\xff\xc3")  # mov eax, -1 (EXCEPTION_CONTINUE_EXECUTION); ret
        return [("main", "main_end", lambda c, base: unwind_info(4, ALLOC_28))]

    trace = emulate(seh_program(write), "x", "uef")
    assert names(trace) == ["SetUnhandledExceptionFilter", "RaiseException", "GetVersion", "GetTickCount"]
    assert trace.meta.stop_reason is StopReason.EXITED


def test_raise_exception_that_nobody_handles_ends_the_entry_point_as_before():
    def write(c: Code, lay: Layout) -> list[Function]:
        c.label("main")
        c.emit(SUB_RSP_28)
        c.emit(b"\xb9\x03\x00\x00\xe0\x31\xd2\x45\x31\xc0\x45\x31\xc9")  # ecx = 0xE0000003, others 0
        call(c, lay, "RaiseException")
        call(c, lay, "GetTickCount")  # never
        c.emit(ADD_RSP_28 + b"\xc3")
        c.label("main_end")
        return [("main", "main_end", lambda c, base: unwind_info(4, ALLOC_28))]

    trace = emulate(seh_program(write), "x", "unhandled")
    assert names(trace) == ["RaiseException"]
    assert trace.meta.stop_reason is StopReason.EMULATION_FAULT
    assert "unhandled_exception 0xe0000003" in trace.meta.stop_detail


def test_virtual_unwind_undoes_the_prolog_that_ran():
    """Unwind codes of `push rbp; push rbx; sub rsp, 0x20; lea rbp, [rsp + 0x10]` at three pcs: in the
    body (all of it), inside the prolog (only what ran), and in the epilog."""
    stack_top = 0x10000
    memory = {}

    def read(address: int, size: int) -> bytes:
        return b"".join(memory.get(address + i, b"\0") for i in range(size))

    def put(address: int, data: bytes) -> None:
        for i, b in enumerate(data):
            memory[address + i] = bytes([b])

    base, begin = 0x140000000, 0x140001000
    # push rbp; push rbx; sub rsp, 0x20; lea rbp, [rsp + 0x10]
    prolog = b"\x55\x53\x48\x83\xec\x20\x48\x8d\x6c\x24\x10"
    epilog = b"\x48\x8d\x65\x10\x5b\x5d\xc3"  # lea rsp, [rbp + 0x10]; pop rbx; pop rbp; ret
    put(begin, prolog + b"\x90" * 5 + epilog)
    codes = [(11, 3, 0), (6, UWOP_ALLOC_SMALL, 3), (2, UWOP_PUSH_NONVOL, 3), (1, UWOP_PUSH_NONVOL, 5)]
    info = unwind_info(11, codes, frame_register=5, frame_offset=1)
    put(base + 0x3000, info)
    entry = unwind.FunctionEntry(0, begin, begin + len(prolog) + 12, base + 0x3000)
    # The stack as the prolog left it: return address, saved rbp, saved rbx, 0x20 bytes.
    ret_at = stack_top - 8
    put(ret_at, struct.pack("<Q", 0x140002222))
    put(ret_at - 8, struct.pack("<Q", 0xBBBB))  # caller's rbp
    put(ret_at - 16, struct.pack("<Q", 0xCCCC))  # caller's rbx
    body_rsp = ret_at - 16 - 0x20

    def at(pc: int, rsp: int, rbp: int) -> unwind.Context:
        ctx = unwind.Context()
        ctx.rsp, ctx.rip = rsp, pc
        ctx.set_reg(5, rbp)
        unwind.virtual_unwind(read, 0, base, pc, entry, ctx)
        return ctx

    for pc, rsp, rbp in [
        (begin + 12, body_rsp, body_rsp + 0x10),  # body
        (begin + 11 + 5, body_rsp, body_rsp + 0x10),  # epilog, at its lea
        (begin + 1, ret_at - 8, 0xBBBB),  # prolog: only `push rbp` ran
    ]:
        ctx = at(pc, rsp, rbp)
        assert (ctx.rip, ctx.rsp) == (0x140002222, stack_top), hex(pc)
        assert ctx.reg(5) == 0xBBBB, hex(pc)
    assert at(begin + 12, body_rsp, body_rsp + 0x10).reg(3) == 0xCCCC

"""The arguments DLL exports are called with: NSIS's string stack and extra_parameters."""

import struct
from pathlib import Path

import capstone
import pytest
from speakeasy.profiler import Run

from conftest import FIXTURES
from runtrace.paths import cache_root
from runtrace.trace.emulate import exportargs
from runtrace.trace.emulate.emulator import TracerSettings, _Session, emulate
from runtrace.trace.emulate.startup import DOCUMENT

# NSIS 3's Math.dll (Debian nsis-common), an x86 plug-in whose `Script` pops a script string and
# registers a callback through extra_parameters first: in whichever corpus build under the cache holds it
# (`make corpus` builds `corpus`; the era build is `corpus-v2-era`).
NSIS_MATH_SHA256 = "4abed58258704866d68f4afc935a021d14d83754b6431c0d40c8c2b84b76a460"
NSIS_MATH = next(
    (p for p in sorted(cache_root().glob(f"*/samples/4a/{NSIS_MATH_SHA256}")) if p.is_file()),
    Path("/nonexistent") / NSIS_MATH_SHA256,
)


def _walk(data: bytes, base: int, ptr_size: int, wide: bool) -> list[str]:
    texts, at = [], base
    fmt = "<Q" if ptr_size == 8 else "<I"
    while at:
        off = at - base
        (nxt,) = struct.unpack_from(fmt, data, off)
        body = data[off + ptr_size : off + exportargs.NODE_SIZE]
        if wide:
            end = next(i for i in range(0, len(body), 2) if body[i : i + 2] == b"\0\0")
            texts.append(body[:end].decode("utf-16-le"))
        else:
            texts.append(body[: body.index(b"\0")].decode("ascii"))
        at = nxt
    return texts


@pytest.mark.parametrize("ptr_size", [4, 8])
@pytest.mark.parametrize("wide", [False, True])
def test_string_stack_is_a_linked_list_of_the_strings(ptr_size, wide):
    base = 0x7000_0000
    data = exportargs.string_stack(base, ptr_size, wide)
    assert _walk(data, base, ptr_size, wide) == list(exportargs.STACK_STRINGS)
    assert exportargs.STACK_STRINGS[0] == DOCUMENT


def test_unicode_builds_are_told_by_their_imports():
    assert exportargs.prefers_wide(["lstrcpynW", "CreateFileW", "GlobalAlloc", "MessageBoxA"])
    assert not exportargs.prefers_wide(["lstrcpynA", "CreateFileA", "GlobalAlloc"])


@pytest.mark.parametrize(
    ("ptr_size", "mode", "expected"),
    [
        (4, capstone.CS_MODE_32, ["ret 8", "ret 4", "ret 8"]),
        (8, capstone.CS_MODE_64, ["ret", "ret", "ret"]),
    ],
)
def test_extra_parameters_functions_return_0_and_pop_their_arguments(ptr_size, mode, expected):
    base = 0x7100_0000
    page = exportargs.extra_parameters(base, ptr_size)
    fields = struct.unpack_from("<4Q" if ptr_size == 8 else "<4I", page)
    flags, functions = fields[0], fields[1:]
    assert page[flags - base : flags - base + 0x100] == bytes(0x100)  # exec_flags: all clear
    md = capstone.Cs(capstone.CS_ARCH_X86, mode)
    for address, ret in zip(functions, expected, strict=True):
        insns = list(md.disasm(page[address - base : address - base + 8], address))
        assert f"{insns[0].mnemonic} {insns[0].op_str}" == "xor eax, eax"
        assert f"{insns[1].mnemonic} {insns[1].op_str}".strip() == ret


def test_every_export_gets_five_arguments_and_a_fresh_string_stack():
    session = _Session((FIXTURES / "benign" / "pillow-imagingtk-64.pyd").read_bytes(), TracerSettings())
    base = session.module.get_base()
    text = next(s for s in session.module.sections if s.Name.rstrip(b"\0") == b".text")
    run = Run()
    run.type, run.start_addr, run.args = "export.Something", base + text.VirtualAddress, [0, 0, 0, 0]
    session.emu.add_run(run)
    assert len(run.args) == 5 and all(a >= 0x10000 for a in run.args)
    emu = session.emu
    ea = exportargs.ExportArgs(emu, 8, wide=False)
    ea.reset()
    assert struct.unpack("<Q", emu.mem_read(ea.pages[3], 8))[0] == ea.stack
    # A plug-in pops: *stacktop moves on and the node is freed; the next export sees the whole list.
    emu.mem_write(ea.pages[3], struct.pack("<Q", ea.stack + exportargs.NODE_SIZE))
    emu.mem_write(ea.stack, bytes(exportargs.NODE_SIZE))
    ea.reset()
    data = bytes(emu.mem_read(ea.stack, exportargs.NODE_SIZE * len(exportargs.STACK_STRINGS)))
    assert struct.unpack("<Q", emu.mem_read(ea.pages[3], 8))[0] == ea.stack
    assert _walk(data, ea.stack, 8, wide=False) == list(exportargs.STACK_STRINGS)


@pytest.mark.skipif(not NSIS_MATH.exists(), reason="no corpus build under the cache holds NSIS's Math.dll")
def test_an_nsis_plugin_pops_its_script_and_runs_it():
    tr = emulate(NSIS_MATH.read_bytes(), NSIS_MATH.name, str(NSIS_MATH), TracerSettings())
    # Revision 11: the stack was empty and RegisterPluginCallback was a NULL pointer: 401 instructions
    # and an invalid instruction in the image's headers.
    assert tr.meta.stop_reason.value == "exited"
    assert not any(e["type"] == "null_calls" for e in tr.meta.events)
    assert tr.instruction_count > 1000
    names = [c.name for c in tr.api_calls]
    assert "KERNEL32.GlobalFree" in names  # popstring frees each node it pops

"""One emulation's host memory stays proportional to what the program uses (trace/emulate/memlimits.py)."""

import resource
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import SAMPLES_ZIP, needs_shared
from runtrace.trace.emulate import memlimits
from runtrace.trace.emulate.batch import trace_batch
from runtrace.trace.emulate.emulator import TracerSettings, _Session
from runtrace.trace.emulate.inputs import iter_samples

PAGE = 0x1000
MIB = 1 << 20

regions = st.lists(st.tuples(st.integers(0, 64), st.integers(1, 8)), max_size=8).map(
    lambda spans: [(p * PAGE, (p + n) * PAGE - 1, 7) for p, n in spans]
)


@given(regions, st.integers(0, 80 * PAGE), st.integers(1, 16 * PAGE))
def test_covered_agrees_with_a_byte_by_byte_check(layout, address, size):
    def mapped(byte: int) -> bool:
        return any(begin <= byte <= last for begin, last, _ in layout)

    expected = all(mapped(b) for b in range(address, address + size, 0x100)) and mapped(address + size - 1)
    assert memlimits.covered(layout, address, size) == expected


@pytest.fixture
def session(cli32):
    s = _Session(cli32.read_bytes(), TracerSettings())
    yield s
    s.recorder.close()


def _call(session, name: str, argv: list[int]) -> int:
    api = session.emu.api
    mod, handler = api.get_export_func_handler("kernel32", name)
    return api.call_api_func(mod, handler[1], argv, {"func_name": f"KERNEL32.{name}"})


def test_a_huge_read_of_unmapped_memory_fails_without_the_host_buffer(session):
    # WriteFile with a length of nearly 4 GiB (as a program computed from a stubbed API's result):
    # unicorn alone would allocate and zero a 4 GiB buffer before finding the range unmapped.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    assert _call(session, "WriteFile", [0, 0x7000_0000, 0xFFFB_0000, 0, 0]) == 0
    assert session.handler_errors == {"KERNEL32.WriteFile: UcError": 1}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024
    with pytest.raises(memlimits.UcError) as raised:
        session.emu.mem_read(0x7000_0000, 0xFFFB_0000)
    assert raised.value.errno == memlimits.UC_ERR_READ_UNMAPPED


def test_large_reads_of_mapped_memory_still_work_and_straddling_ones_fail(session):
    emu = session.emu
    base = emu.mem_map(2 * MIB, tag="emu.test")
    emu.mem_write(base + 2 * MIB - 4, b"tail")
    data = emu.mem_read(base, 2 * MIB)
    assert len(data) == 2 * MIB and data.endswith(b"tail")
    with pytest.raises(memlimits.UcError):
        emu.mem_read(base + PAGE, 2 * MIB)  # runs one page past the end


def test_a_32_bit_process_gets_no_block_it_could_not_address(session):
    # unicorn backs mapped memory only when it is written: a large block costs nothing until used, so
    # one that fits is granted, and the emulator's own maps are never refused.
    assert _call(session, "VirtualAlloc", [0, 1 << 30, 0x3000, 4]) != 0
    assert session.emu.mem_map(32 * MIB, tag="emu.test") != 0
    assert session.handler_errors == {}
    # Speakeasy would map these past 4 GiB, where a 32-bit program's pointer is truncated onto other
    # memory; Windows fails them, and the program gets NULL.
    assert _call(session, "VirtualAlloc", [0, 0xC000_0000, 0x3000, 4]) == 0
    assert _call(session, "HeapAlloc", [0, 0, 1 << 30]) == 0
    assert session.handler_errors == {
        "KERNEL32.VirtualAlloc: AllocationRefused": 1,
        "KERNEL32.HeapAlloc: AllocationRefused": 1,
    }


def test_a_64_bit_process_gets_large_blocks(cli64):
    s = _Session(cli64.read_bytes(), TracerSettings())
    try:
        assert _call(s, "HeapAlloc", [0, 0, 0xFFFF_FFFF]) != 0  # (GetFileSize's failure as a size)
        assert s.handler_errors == {}
    finally:
        s.recorder.close()


@needs_shared
def test_the_program_that_wrote_four_gib_is_traced_under_a_quarter_gib_cap(tmp_path):
    # Practical Malware Analysis lab 11-01 (capa test files): WriteFile(..., 0xfffb0000, ...) took 4.1 GiB.
    sha = "57d8d248a8741176348b5d12dcf29f34c8f48ede0ca13c30d12e5ba0384056d7"
    with zipfile.ZipFile(SAMPLES_ZIP) as archive:
        path = tmp_path / "sample.bin"
        path.write_bytes(archive.read(f"{sha}.bin", pwd=b"infected"))
    # The batch kills a child whose private memory passes the cap (its resident size would also count
    # pages shared with this test process).
    settings = TracerSettings(memory_mb=256)
    (outcome,) = trace_batch(iter_samples([path]), tmp_path / "out", settings, workers=1)
    assert (outcome.status, outcome.stop_reason, outcome.error) == ("ok", "exited", "")
    assert outcome.instruction_count > 10_000

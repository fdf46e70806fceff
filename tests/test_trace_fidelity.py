"""The trace holds what the program executed, instruction for instruction (tracer revision 13).

Up to revision 12 the block at the return address of every API call was missing (unicorn 1 ran it
without its block hook), blocks that a fault left part way were recorded whole, and straight runs longer
than unicorn's translation limit were not recorded at all.  A plain per-instruction hook is the witness.
"""

import time
import zipfile

import pytest

from conftest import FIXTURES, SAMPLES_ZIP, needs_shared
from runtrace.trace.emulate.emulator import TracerSettings, emulate
from runtrace.trace.emulate.fidelity import api_returns
from trace_truth import witnessed_run

FIXTURE_FILES = ["cli-32.exe", "cli-64.exe", "pillow-imagingtk-64.pyd"]
# Enough instructions for the comparison to mean something.  Since revision 16 EnumProcessModules lists
# the process's modules, where the .pyd finds Tcl's functions (Speakeasy resolves any name) and its
# tkinit ends after registering its command: 536 instructions, where before it went on through an error path.
MIN_INSTRUCTIONS = {"cli-32.exe": 2000, "cli-64.exe": 2000, "pillow-imagingtk-64.pyd": 500}

# capa test files that exercise each way a block hook alone goes wrong (found by comparing the
# witness with the trace over 120 capa programs):
CAPA = {
    # long straight runs of junk instructions: unicorn cuts them and reports no block at all
    "f58c502a1f26f8e754caa1adb73df3714e54b256383becaedc4166aacad15a57": 100_000,
    # `lock in eax, dx` (f0 ed): unicorn runs it, capstone cannot decode it
    "3242434f9894f1d6e706d21a5e544659cf429b361a28e147b7fef9a08edc56d5": 100_000,
    # an invalid instruction in the middle of a block, which ends the run there
    "a77387fff57638ef8773d74950d0d17ff29e10d6a514f698f32af77ec5df2586": 100_000,
    # GetProcAddress'ed APIs called inside Speakeasy's decoy kernel32
    "2b8ac117f262c8ac6417d33cdc004daec35e6ad277bd94455b1fb7a5ae94f50e": 30_000,
    # window procedures called back from the message loop
    "90be219fbc8c174b53cc9c38d25700a9f0429946148211b05d5f3eb0ba527290": 30_000,
    # amd64, a run that jumps to the NULL page and ends on an instruction unicorn cannot decode
    "71419e4d6f538b8a04ca6786e4d68f0d40204df465fe80bc6b4a0b259103e50f": 30_000,
    # amd64, tens of thousands of API calls
    "16a7d90a578215fb1796caf1c2ad99126bfd7022f49bd6b8051e925384910712": 30_000,
}


def _capa(sha: str) -> bytes:
    with zipfile.ZipFile(SAMPLES_ZIP) as z:
        return z.read(f"{sha}.bin", pwd=b"infected")


def _assert_exact(run) -> None:
    assert run.recorded == run.witnessed


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_the_trace_is_every_instruction_the_program_executed(name):
    run = witnessed_run((FIXTURES / "benign" / name).read_bytes(), TracerSettings())
    assert len(run.witnessed) > MIN_INSTRUCTIONS[name]
    _assert_exact(run)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_every_returning_api_call_is_followed_by_its_return_address(name):
    data = (FIXTURES / "benign" / name).read_bytes()
    trace = emulate(data, "x", name, TracerSettings())
    counts = api_returns(trace)
    assert counts.returning >= 15
    # The C runtime's `_initterm` is followed by the first initialiser it calls, not by its return.
    initialisers = sum(c.name.split(".")[-1] in ("_initterm", "_initterm_e") for c in trace.api_calls)
    assert counts.followed >= counts.returning - initialisers


@needs_shared
@pytest.mark.parametrize("sha", list(CAPA))
def test_real_malware_traces_are_exact(sha):
    run = witnessed_run(_capa(sha), TracerSettings(max_instructions=CAPA[sha], timeout_s=120))
    assert len(run.witnessed) > 1000
    _assert_exact(run)


@needs_shared
def test_real_malware_api_calls_are_followed_by_their_return_addresses():
    returning = followed = 0
    for sha, cap in CAPA.items():
        counts = api_returns(emulate(_capa(sha), sha, "sample", TracerSettings(max_instructions=cap)))
        returning += counts.returning
        followed += counts.followed
    assert returning > 400
    # Not all: a call that makes a callback (DispatchMessage) is followed by the callback.
    assert followed >= 0.99 * returning


@needs_shared
def test_the_same_file_gives_the_same_trace_whenever_it_is_traced():
    # This sample mixes the system time into values it branches on: with the host's clock (tracer
    # revision 12) it ran 1,800 or 26,000 instructions depending on the second it was traced in.  And
    # Speakeasy's class-level handle counters and PEB module list carried over from one emulation to
    # the next in a process: traced after two other programs, it ran 14,702 or 1,772 instructions.
    sha = "3242434f9894f1d6e706d21a5e544659cf429b361a28e147b7fef9a08edc56d5"
    settings = TracerSettings(max_instructions=100_000)
    first = emulate(_capa(sha), sha, "sample", settings)
    for other in ("a77387fff57638ef8773d74950d0d17ff29e10d6a514f698f32af77ec5df2586",
                  "16a7d90a578215fb1796caf1c2ad99126bfd7022f49bd6b8051e925384910712"):  # fmt: skip
        emulate(_capa(other), other, "other", settings)
    time.sleep(1.1)
    second = emulate(_capa(sha), sha, "sample", settings)
    assert first.instruction_count > 20_000
    assert first.blocks == second.blocks
    assert (first.visits == second.visits).all()
    assert first.api_calls == second.api_calls


def test_the_emulated_clock_starts_at_a_fixed_instant_and_moves_on():
    from speakeasy.winenv.api.usermode import kernel32

    from runtrace.trace.emulate import repeatable

    repeatable.install()
    first = kernel32.datetime.datetime.utcnow()
    second = kernel32.datetime.datetime.utcnow()
    assert first == repeatable.START + repeatable.STEP
    assert second - first == repeatable.STEP
    repeatable.install()
    assert kernel32.datetime.datetime.utcnow() == first

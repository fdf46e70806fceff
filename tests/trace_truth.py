"""An independent witness of what the emulator executed, for the tracer's fidelity tests.

`witnessed_run` emulates a program as `emulate` does and, beside runtrace's native recorder, registers a
plain Python per-instruction hook that notes every instruction unicorn starts.  The witness leaves out
what is not the program's: instructions in Speakeasy's own code (its reserved region and decoy DLLs),
instructions unicorn could not decode (it reports their size as 0xf1f1f1f1), and an instruction at which
Speakeasy's own per-instruction hook moved the program counter away or the recorder stopped the engine
(at a cap or the timeout): it never runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from unicorn import UC_HOOK_CODE

from runtrace.trace.blocks import canonicalize
from runtrace.trace.emulate.emulator import TracerSettings, _Session

MAX_X86_INSTRUCTION = 15


@dataclass
class WitnessedRun:
    witnessed: list[int]  # instruction addresses, in order, from the Python hook
    recorded: list[int]  # instruction addresses, in order, from the trace's canonical blocks
    stop_reason: str
    orphan_instructions: int
    truncated_visits: int


def witnessed_run(data: bytes, settings: TracerSettings) -> WitnessedRun:
    session = _Session(data, settings)
    emu = session.emu
    witnessed: list[int] = []
    moved_at: list[int] = []
    speakeasy_hook = emu._hook_code

    def hook_code(e, address, size, ctx):
        result = speakeasy_hook(e, address, size, ctx)
        if emu.get_pc() != address:
            moved_at.append(address)
        return result

    emu._hook_code = hook_code  # runtrace's gated hook calls it through the attribute

    def witness(uc, address, size, user_data):
        if moved_at and moved_at[-1] == address:
            moved_at.pop()
            return
        if session.recorder.stopped:
            return
        if size <= MAX_X86_INSTRUCTION and not session._emulator_code(address):
            witnessed.append(address)

    # Registered after the recorder's hooks, so unicorn calls it after them for every instruction.
    emu.emu_eng.emu.hook_add(UC_HOOK_CODE, witness)
    session.run()
    raw_visits = session.recorder.visits()
    blocks, visits, _ = canonicalize(session.recorder.raw_blocks, raw_visits, session.bits)
    recorded = [a for v in visits.tolist() for a in blocks[v].instruction_addresses()]
    return WitnessedRun(
        witnessed,
        recorded,
        str(session.stop_reason()[0]),
        session.recorder.orphan_instructions,
        session.recorder.truncated_visits,
    )

"""x64dbg binary traces: hand-built files from the format description, round trips, bad input, fuzzing."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.disasm import decode_one, is_control_transfer
from runtrace.trace.errors import TraceReadError
from runtrace.trace.formats.x64dbg import FULL_DUMP_EVERY, read_x64dbg, write_x64dbg
from runtrace.trace.model import Arch, StopReason
from trace_samples import (
    DUMP_SLOTS,
    IP_SLOT,
    block,
    decode_blocks,
    full_dump,
    header,
    instructions,
    sample_trace,
    stream,
)

ARCHES = [Arch.X86, Arch.AMD64]
PUSH_EBP, MOV_EBP_ESP, RET = b"\x55", b"\x89\xe5", b"\xc3"


def write(tmp_path, data: bytes, name: str = "t.trace32"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- reading files built by hand --------------------------------------------------------------------


def test_hand_built_64_bit_file_with_registers_memory_and_repeats(tmp_path):
    a = Arch.AMD64
    base = 0x7FF6A1B21000
    data = header(a, path="C:\\samples\\demo.exe")
    data += block(a, bytes.fromhex("4883ec28"), full_dump(a, base, s0=5, s4=0x1000), tid=0x1234)
    # rax (slot 0) and rip (slot 16) changed; one memory read (no new value) and one write.
    data += block(
        a,
        bytes.fromhex("488b0424"),
        [(0, 7), (16, base + 4)],
        mem=[(1, 0x1000, 0xAA, None), (0, 0x2000, 0xBB, 0xCC)],
    )
    data += block(a, bytes.fromhex("f3a4"), [(16, base + 8)])  # rep movsb ...
    data += block(a, bytes.fromhex("f3a4"), [(1, 3)])  # ... again: rip unchanged, rcx changed
    data += block(a, RET, [(16, base + 10)], mem=[(1, 0x0FF8, base, None)])
    trace = read_x64dbg(write(tmp_path, data, "demo.trace64"))

    assert trace.arch is Arch.AMD64 and trace.meta.source == "x64dbg"
    assert trace.meta.stop_reason is StopReason.IMPORTED
    assert trace.meta.file_name == "demo.exe"
    got = [(i.address, i.data, i.text) for _, i in trace.iter_instructions()]
    assert got == [
        (base, bytes.fromhex("4883ec28"), "sub rsp, 0x28"),
        (base + 4, bytes.fromhex("488b0424"), "mov rax, qword ptr [rsp]"),
        (base + 8, bytes.fromhex("f3a4"), "rep movsb byte ptr [rdi], byte ptr [rsi]"),
        (base + 8, bytes.fromhex("f3a4"), "rep movsb byte ptr [rdi], byte ptr [rsi]"),
        (base + 10, RET, "ret"),
    ]
    assert trace.threads is not None and set(trace.threads.tolist()) == {0x1234}


def test_hand_built_32_bit_file(tmp_path):
    a = Arch.X86
    data = header(a)
    data += block(a, PUSH_EBP, full_dump(a, 0x401000), tid=7)
    data += block(a, MOV_EBP_ESP, [(4, 0x12FF8C), (8, 0x401001)])  # esp and eip
    data += block(a, RET, [(5, 0x12FF8C), (8, 0x401003)])
    trace = read_x64dbg(write(tmp_path, data))
    assert trace.arch is Arch.X86
    assert [(i.address, i.text) for _, i in trace.iter_instructions()] == [
        (0x401000, "push ebp"),
        (0x401001, "mov ebp, esp"),
        (0x401003, "ret"),
    ]
    assert len(trace.blocks) == 1 and trace.visits.tolist() == [0]


def test_multi_thread_file_splits_blocks_at_thread_switches(tmp_path):
    a = Arch.X86
    data = header(a)
    data += block(a, PUSH_EBP, full_dump(a, 0x401000), tid=0x10)
    data += block(a, PUSH_EBP, [(8, 0x402000)], tid=0x20)  # thread 0x20 runs elsewhere
    data += block(a, MOV_EBP_ESP, [(8, 0x402001)])  # still thread 0x20
    data += block(a, MOV_EBP_ESP, [(8, 0x401001)], tid=0x10)
    data += block(a, RET, [(8, 0x401003)])  # sequential in thread 0x10
    data += block(a, RET, [(8, 0x402003)], tid=0x20)
    trace = read_x64dbg(write(tmp_path, data))
    assert [(t, i.address) for t, i in trace.iter_instructions()] == [
        (0x10, 0x401000),
        (0x20, 0x402000),
        (0x20, 0x402001),
        (0x10, 0x401001),
        (0x10, 0x401003),
        (0x20, 0x402003),
    ]
    assert trace.threads.tolist() == [0x10, 0x20, 0x10, 0x20]
    assert [(b.address, b.instruction_count) for b in trace.blocks] == [
        (0x401000, 1),
        (0x402000, 2),
        (0x401001, 2),
        (0x402003, 1),
    ]


# --- writer layout and round trips --------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("threads", [(0,), (0x111, 0x222)])
def test_round_trip_keeps_instructions_blocks_visits_and_threads(tmp_path, arch, threads):
    trace = sample_trace(arch, runs=150, threads=threads)
    assert trace.instruction_count > 2 * FULL_DUMP_EVERY  # several full dumps
    path = write_x64dbg(trace, tmp_path / "out.trace")
    back = read_x64dbg(path)
    assert back.arch is arch
    assert instructions(back) == instructions(trace)
    assert back.blocks == trace.blocks
    assert back.visits.tolist() == trace.visits.tolist()
    if len(threads) == 1:
        assert back.threads is None and trace.threads is None
    else:
        assert back.threads.tolist() == trace.threads.tolist()
    assert back.meta.sha256 == trace.meta.sha256 and back.meta.file_name == "sample.exe"


@pytest.mark.parametrize("arch", ARCHES)
def test_writer_follows_x64dbg_register_dump_rule(tmp_path, arch):
    trace = sample_trace(arch, runs=150, threads=(5, 6))
    info, blocks = decode_blocks(write_x64dbg(trace, tmp_path / "out.trace").read_bytes())
    assert info["arch"] == ("x86" if arch is Arch.X86 else "x64")
    expected = instructions(trace)
    assert len(blocks) == len(expected)
    previous_ip, previous_tid = None, None
    for k, (b, (tid, address, data)) in enumerate(zip(blocks, expected, strict=True)):
        assert b["type"] == 0 and b["opcode"] == data
        if k % FULL_DUMP_EVERY == 0:
            assert sorted(b["regs"]) == list(range(DUMP_SLOTS[arch]))
            assert b["regs"][IP_SLOT[arch]] == address
            assert sum(b["regs"].values()) == address  # every other slot is 0
        elif address != previous_ip:
            assert b["regs"] == {IP_SLOT[arch]: address}  # only the changed slot: the IP
        else:
            assert b["regs"] == {}  # `rep movsb` again: nothing changed
        # Thread id on the first block and whenever the thread changes, never otherwise.
        assert b["tid"] == (tid if tid != previous_tid else None)
        previous_ip, previous_tid = address, tid


def test_reading_does_not_depend_on_chunk_size(tmp_path):
    trace = sample_trace(Arch.AMD64, runs=30, threads=(1, 2, 3))
    path = write_x64dbg(trace, tmp_path / "out.trace64")
    reference = read_x64dbg(path)
    for chunk in (5, 64, 1000, 4096):
        back = read_x64dbg(path, chunk_bytes=chunk)
        assert back.blocks == reference.blocks
        assert back.visits.tolist() == reference.visits.tolist()
        assert back.threads.tolist() == reference.threads.tolist()


def test_writer_refuses_traces_without_bytes(tmp_path):
    from runtrace.trace.model import BasicBlock, Trace, TraceMeta

    trace = Trace(
        TraceMeta("", Arch.X86, "x64dbg-text"),
        [BasicBlock(0x401000, b"", (1,), ("push ebp",))],
        np.array([0], dtype=np.uint32),
    )
    with pytest.raises(ValueError, match="no instruction bytes"):
        write_x64dbg(trace, tmp_path / "x.trace32")
    assert not (tmp_path / "x.trace32").exists()


# --- BlockBuilder.add_stream is add() in bulk ---------------------------------------------------------


def _is_transfer(data: bytes, bits: int) -> bool:
    insn = decode_one(data, 0, bits)
    return is_control_transfer(insn.mnemonic if insn else "(bad)")


def _feed_stream(builder: BlockBuilder, items, bits: int) -> None:
    if not items:
        return
    tids = np.array([t for t, _, _ in items], dtype=np.uint32)
    addresses = np.array([a for _, a, _ in items], dtype=np.uint64)
    lengths = np.array([len(d) for _, _, d in items], dtype=np.int64)
    transfers = np.array([_is_transfer(d, bits) for _, _, d in items])
    builder.add_stream(addresses, b"".join(d for _, _, d in items), lengths, tids, transfers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), arch=st.sampled_from(ARCHES), n_threads=st.integers(1, 3))
def test_add_stream_equals_add_one_by_one(seed, arch, n_threads):
    rng = random.Random(seed)
    items = stream(arch, runs=rng.randint(1, 4), threads=tuple(range(n_threads)))
    # Sprinkle in self-modified code (same address, other bytes) and a non-sequential jump.
    if items:
        t, a, _ = items[rng.randrange(len(items))]
        items.insert(rng.randrange(len(items)), (t, a, b"\x90"))
    one = BlockBuilder(arch.bits)
    for tid, address, data in items:
        one.add(address, data, tid)
    bulk = BlockBuilder(arch.bits)
    i = 0
    while i < len(items):  # random slices, mixed with single add() calls
        n = rng.randint(0, 12)
        if rng.random() < 0.2:
            tid, address, data = items[i]
            bulk.add(address, data, tid)
            i += 1
        else:
            _feed_stream(bulk, items[i : i + n], arch.bits)
            i += n
    b1, v1, t1 = one.finish()
    b2, v2, t2 = bulk.finish()
    assert b1 == b2
    assert v1.tolist() == v2.tolist()
    assert (t1 is None and t2 is None) or t1.tolist() == t2.tolist()


# --- bad input: one line naming file and byte offset -------------------------------------------------


def _error(path, **kwargs) -> str:
    with pytest.raises(TraceReadError) as info:
        read_x64dbg(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def _valid(a=Arch.X86) -> bytes:
    return header(a) + block(a, PUSH_EBP, full_dump(a, 0x401000), tid=1) + block(a, RET, [(8, 0x401001)])


def test_wrong_magic(tmp_path):
    assert "byte 0: not an x64dbg trace: magic b'MZ\\x90\\x00'" in _error(
        write(tmp_path, b"MZ\x90\x00" + b"\0" * 60)
    )


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"", "byte 0: header cut off"),
        (b"TR", "byte 2: header cut off"),
        (b"TRAC\x05\x00", "byte 6: header cut off"),
    ],
)
def test_truncated_header(tmp_path, data, where):
    assert where in _error(write(tmp_path, data))


def test_truncated_json(tmp_path):
    data = header(Arch.X86)[:20]
    message = _error(write(tmp_path, data))
    assert "byte 20: JSON header cut off" in message


def test_json_without_arch_and_invalid_json(tmp_path):
    body = b'{"ver": 1}'
    assert 'byte 8: JSON header has no "arch"' in _error(
        write(tmp_path, b"TRAC" + bytes([len(body), 0, 0, 0]) + body)
    )
    body = b'{"arch": "x86"'
    assert "not valid JSON" in _error(write(tmp_path, b"TRAC" + bytes([len(body), 0, 0, 0]) + body))
    assert "\"arch\" is 'arm64'" in _error(write(tmp_path, header("arm64")))


def test_huge_json_length_is_refused_without_allocating(tmp_path):
    assert "byte 4: JSON header length 4294967295 is over" in _error(
        write(tmp_path, b"TRAC\xff\xff\xff\xff{}")
    )


def test_block_type_other_than_zero(tmp_path):
    data = _valid()
    bad_at = len(data)
    data += b"\x01" + block(Arch.X86, PUSH_EBP, [(8, 0x401005)])[1:]
    assert f"byte {bad_at}: block type 1" in _error(write(tmp_path, data))


def test_block_cut_off_midway(tmp_path):
    data = _valid()
    bad_at = len(data)
    data += block(Arch.X86, MOV_EBP_ESP, [(8, 0x401005)])[:-2]
    assert f"byte {bad_at}: block cut off by the end of the file" in _error(write(tmp_path, data))


@pytest.mark.parametrize(("flags", "length"), [(0x80, 0), (0x10 | 1, 17)])
def test_opcode_length_zero_or_over_15(tmp_path, flags, length):
    data = _valid()
    bad_at = len(data)
    data += bytes([0, 0, 0, flags]) + b"\x00\x00\x00\x00" + b"\x90" * 20
    assert f"byte {bad_at}: opcode length {length} (must be 1 to 15)" in _error(write(tmp_path, data))


def test_register_index_past_the_dump(tmp_path):
    a = Arch.AMD64
    data = header(a) + block(a, RET, full_dump(a, 0x1000))
    bad_at = len(data)
    data += block(a, RET, [(16, 0x1001), (172, 5)])
    assert f"byte {bad_at}: register index past the 172-slot register dump" in _error(write(tmp_path, data))


def test_first_block_without_instruction_pointer(tmp_path):
    data = header(Arch.X86) + block(Arch.X86, RET, [(0, 1)])
    assert "first instruction has no instruction-pointer value" in _error(write(tmp_path, data))


def test_allow_truncated_keeps_the_readable_prefix(tmp_path):
    trace = sample_trace(Arch.X86, runs=20, threads=(1, 2))
    full = write_x64dbg(trace, tmp_path / "full.trace32").read_bytes()
    cut = write(tmp_path, full[: len(full) - 7], "cut.trace32")
    message = _error(cut)
    assert "block cut off" in message
    back = read_x64dbg(cut, allow_truncated=True)
    assert instructions(back) == instructions(trace)[:-1]
    assert back.meta.stop_detail.startswith("truncated: ")
    assert back.meta.events[0]["kind"] == "truncated"
    # A damaged block in the middle: everything before it is kept.
    _, blocks = decode_blocks(full)
    bad = bytearray(full)
    bad[blocks[1000]["offset"]] = 7
    path = write(tmp_path, bytes(bad), "bad.trace32")
    assert f"byte {blocks[1000]['offset']}: block type 7" in _error(path)
    back = read_x64dbg(path, allow_truncated=True)
    assert instructions(back) == instructions(trace)[:1000]


def test_missing_file_is_a_read_error(tmp_path):
    assert "cannot open" in _error(tmp_path / "nope.trace64")


# --- fuzzing: only a Trace or a TraceReadError, quickly -----------------------------------------------


def _read_or_error(path, allow_truncated=False):
    try:
        return read_x64dbg(path, allow_truncated=allow_truncated)
    except TraceReadError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=st.sampled_from(ARCHES), body=st.binary(max_size=3000))
def test_fuzz_random_blocks_after_a_valid_header(tmp_path, arch, body):
    path = write(tmp_path, header(arch) + body)
    _read_or_error(path)
    trace = read_x64dbg(path, allow_truncated=True)  # stream problems never raise with allow_truncated
    assert trace.instruction_count <= len(body) // 5


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    out = {}
    for arch in ARCHES:
        path = tmp_path_factory.mktemp("valid") / "v.trace"
        out[arch] = write_x64dbg(sample_trace(arch, runs=3, threads=(1, 2)), path).read_bytes()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arch=st.sampled_from(ARCHES),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]), st.floats(0, 1), st.integers(0, 255)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_mutated_valid_files(tmp_path, valid_files, arch, edits):
    data = bytearray(valid_files[arch])
    for kind, where, value in edits:
        i = int(where * (len(data) - 1)) if data else 0
        if kind == "flip" and data:
            data[i] = value
        elif kind == "insert":
            data[i:i] = bytes([value]) * (value % 7 + 1)
        elif kind == "delete":
            del data[i : i + value % 9 + 1]
        elif kind == "truncate":
            del data[i:]
    path = write(tmp_path, bytes(data))
    _read_or_error(path)
    _read_or_error(path, allow_truncated=True)


@st.composite
def _plausible_blocks(draw, arch):
    """Blocks whose fields are mostly sensible (type 0, small counts) with payloads of about the right
    size, so the fuzzer gets past the first block and into registers, memory and thread ids."""
    ptr = 8 if arch is Arch.AMD64 else 4
    out = b""
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
        n_regs = draw(st.sampled_from([0, 1, 1, 2, 3, 9, DUMP_SLOTS[arch], 255]))
        n_mem = draw(st.sampled_from([0, 0, 0, 1, 2, 3, 255]))
        flags = draw(st.integers(0, 255))
        size = 4 * (flags >> 7) + (flags & 15) + n_regs * (1 + ptr) + n_mem * (1 + 3 * ptr)
        size += draw(st.integers(-3, 3))
        out += bytes([kind, n_regs, n_mem, flags]) + draw(
            st.binary(min_size=max(size, 0), max_size=max(size, 0))
        )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), arch=st.sampled_from(ARCHES))
def test_fuzz_plausible_blocks(tmp_path, data, arch):
    body = block(arch, RET, full_dump(arch, 0x1000), tid=1) + data.draw(_plausible_blocks(arch))
    path = write(tmp_path, header(arch) + body)
    _read_or_error(path)
    assert read_x64dbg(path, allow_truncated=True).instruction_count >= 1


def test_hash_collisions_in_the_transfer_table_cannot_change_the_result(tmp_path, monkeypatch):
    import runtrace.trace.formats.x64dbg as x64dbg

    trace = sample_trace(Arch.AMD64, runs=20, threads=(1, 2))
    path = write_x64dbg(trace, tmp_path / "t.trace64")
    # Every opcode hashes to 0: all but the first collide and must take the exact path.
    monkeypatch.setattr(x64dbg._TransferTable, "_K0", np.uint64(0))
    monkeypatch.setattr(x64dbg._TransferTable, "_K1", np.uint64(0))
    back = read_x64dbg(path)
    assert back.blocks == trace.blocks and back.visits.tolist() == trace.visits.tolist()

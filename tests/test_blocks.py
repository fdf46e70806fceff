"""Canonical basic blocks: the emulator's translation blocks and an imported instruction stream agree."""

import numpy as np

from runtrace.trace.blocks import BlockBuilder, _distinct_runs, canonicalize
from runtrace.trace.disasm import is_control_transfer
from runtrace.trace.formats.native import load_trace, save_trace
from runtrace.trace.model import Arch, Trace, TraceMeta

# push ebp; mov ebp, esp; je +2; (2 bytes skipped) ret
CODE = [(0x401000, b"\x55"), (0x401001, b"\x8b\xec"), (0x401003, b"\x74\x02"), (0x401007, b"\xc3")]


def test_block_builder_cuts_at_transfers_and_jumps():
    b = BlockBuilder(32)
    for addr, data in CODE * 2:
        b.add(addr, data)
    blocks, visits, threads = b.finish()
    assert [(x.address, x.insn_lengths) for x in blocks] == [(0x401000, (1, 2, 2)), (0x401007, (1,))]
    assert visits.tolist() == [0, 1, 0, 1]
    assert threads is None


def test_thread_switch_and_non_sequential_flow_end_a_block():
    b = BlockBuilder(32)
    b.add(0x401000, b"\x55", tid=1)
    b.add(0x401001, b"\x8b\xec", tid=2)  # another thread: new block even though sequential
    b.add(0x401010, b"\x55", tid=2)  # not the next address: new block (e.g. after an exception)
    blocks, visits, threads = b.finish()
    assert visits.tolist() == [0, 1, 2]
    assert threads.tolist() == [1, 2, 2]


def test_canonicalize_merges_split_translation_blocks_like_the_builder():
    # An emulator may split one straight-line run (page boundary, size limit); canonical blocks do not.
    raw = [(0x401000, b"\x55"), (0x401001, b"\x8b\xec\x74\x02"), (0x401007, b"\xc3")]
    blocks, visits, group_of_raw = canonicalize(raw, np.array([0, 1, 2, 0, 1, 2], dtype=np.uint32), 32)
    builder = BlockBuilder(32)
    for addr, data in CODE * 2:
        builder.add(addr, data)
    b_blocks, b_visits, _ = builder.finish()
    assert blocks == b_blocks
    assert visits.tolist() == b_visits.tolist()
    assert group_of_raw.tolist() == [0, 0, 1, 2, 2, 3]


def test_canonicalize_merges_any_split_of_the_same_code_like_the_builder():
    # The same straight run reaches canonicalize cut in many ways (unicorn's blocks, single
    # instructions of blocks it did not report, blocks left part way): every way is one basic block.
    rng = np.random.default_rng(13)
    head = CODE[:3]  # push ebp; mov ebp, esp; je +2
    pieces = [(a, i, j) for i in range(3) for j in range(i + 1, 4) for a in [head[i][0]]]
    raw = [(a, b"".join(d for _, d in head[i:j])) for a, i, j in pieces] + [CODE[3]]
    builder, visits = BlockBuilder(32), []
    for _ in range(400):
        cuts = [0, *sorted(rng.choice([1, 2], size=rng.integers(0, 3), replace=False).tolist()), 3]
        visits += [pieces.index((head[i][0], i, j)) for i, j in zip(cuts, cuts[1:], strict=False)] + [
            len(raw) - 1
        ]
        for addr, data in CODE:
            builder.add(addr, data)
    blocks, canonical, _ = canonicalize(raw, np.array(visits, dtype=np.uint32), 32)
    b_blocks, b_visits, _ = builder.finish()
    assert blocks == b_blocks
    assert canonical.tolist() == b_visits.tolist()


def test_distinct_runs_are_found_element_by_element():
    rng = np.random.default_rng(7)
    v = rng.integers(0, 3, 6000)
    sizes = rng.integers(1, 5, 1500)
    starts = np.cumsum(sizes) - sizes
    firsts, which = _distinct_runs(v, starts, sizes)
    runs = [tuple(v[s : s + n].tolist()) for s, n in zip(starts.tolist(), sizes.tolist(), strict=True)]
    first_run: dict[tuple, int] = {}
    for i, run in enumerate(runs):
        first_run.setdefault(run, i)
    assert firsts.tolist() == list(first_run.values())
    assert [int(firsts[w]) for w in which] == [first_run[run] for run in runs]


def test_no_control_transfer_inside_a_block():
    raw = [(0x401000, b"\x55\x8b\xec\x74\x02"), (0x401007, b"\xc3")]
    blocks, _, _ = canonicalize(raw, np.array([0, 1], dtype=np.uint32), 32)
    tr = Trace(TraceMeta("x", Arch.X86, "test"), blocks, np.array([0, 1]))
    for i in range(len(blocks)):
        insns = tr.block_instructions(i)
        assert not any(is_control_transfer(x.mnemonic) for x in insns[:-1])


def test_text_blocks_survive_the_native_file(tmp_path):
    b = BlockBuilder(32)
    for addr, data in CODE:
        b.add(addr, data)
    blocks, visits, _ = b.finish()
    from runtrace.trace.model import BasicBlock

    text_blocks = [BasicBlock(x.address, b"", x.insn_lengths, ("push ebp", "mov ebp, esp", "je 0x401007"))
                   if x.address == 0x401000 else BasicBlock(x.address, b"", x.insn_lengths, ("ret",))
                   for x in blocks]  # fmt: skip
    tr = Trace(TraceMeta("x", Arch.X86, "ollydbg"), text_blocks, visits)
    back = load_trace(save_trace(tr, tmp_path / "t.rtrace"))
    assert back.blocks == text_blocks
    assert [i.text for _, i in back.iter_instructions()] == ["push ebp", "mov ebp, esp", "je 0x401007", "ret"]

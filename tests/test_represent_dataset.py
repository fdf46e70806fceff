"""ISM/BSM encoding of real (synthetic, benign) machine code, API tokens, and dataset storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtrace.represent.dataset import DatasetError, SequenceDataset, build_dataset
from runtrace.represent.encode import encode_trace, expand
from runtrace.represent.normalise import normalise_instruction
from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.formats.native import save_trace
from runtrace.trace.model import ApiCall, Arch, BasicBlock, StopReason, Trace, TraceMeta

# A tiny program, as executed instructions (address, bytes), block by block.
PROLOGUE = [
    (0x401000, b"\x55"),
    (0x401001, b"\x89\xe5"),
    (0x401003, b"\xe8\xf8\x0f\x00\x00"),
]  # push/mov/call
LOOP = [(0x402000, b"\x40"), (0x402001, b"\x83\xf8\x03"), (0x402004, b"\x75\xfa")]  # inc/cmp/jne
EPILOGUE = [(0x402006, b"\x8b\x45\xf8"), (0x402009, b"\xc3")]  # mov eax,[ebp-8]; ret
OTHER_LOOP = [(0x403000, b"\x31\xc0"), (0x403002, b"\x48"), (0x403003, b"\x75\xfb")]  # xor/dec/jne


def make_trace(sha: str, blocks: list[list[tuple[int, bytes]]], api: list[ApiCall] | None = None) -> Trace:
    builder = BlockBuilder(32)
    for block in blocks:
        for address, data in block:
            builder.add(address, data)
    bbs, visits, threads = builder.finish()
    meta = TraceMeta(sha * 64 if len(sha) == 1 else sha, Arch.X86, "emulator", stop_reason=StopReason.EXITED)
    return Trace(meta, bbs, visits, api or [], threads)


def naive_tokens(trace: Trace, mode: str) -> list[str]:
    """Reference: normalise every executed instruction one by one."""
    return [normalise_instruction(i.mnemonic, i.op_str, mode) for _, i in trace.iter_instructions()]


@pytest.fixture
def trace() -> Trace:
    calls = [ApiCall(0, "kernel32.CreateFileA", 0x401008), ApiCall(0, "kernel32.CloseHandle", 0x401008)]
    return make_trace("a", [PROLOGUE, LOOP, LOOP, LOOP, EPILOGUE], calls)


@pytest.mark.parametrize("mode", ["mnemonic", "operand-kinds", "registers"])
def test_ism_equals_instruction_by_instruction_normalisation(trace: Trace, mode: str) -> None:
    enc = encode_trace(trace, "ism", mode, api=False)
    assert [enc.lexicon[i] for i in enc.sequence] == naive_tokens(trace, mode)


def test_api_tokens_follow_the_calling_block_and_can_be_switched_off(trace: Trace) -> None:
    with_api = encode_trace(trace, "ism", "registers", api=True)
    tokens = [with_api.lexicon[i] for i in with_api.sequence]
    assert tokens[:5] == [
        "push ebp",
        "mov ebp,esp",
        "call ADDR",
        "api:kernel32.createfilea",
        "api:kernel32.closehandle",
    ]
    assert with_api.n_api_calls == 2
    without = encode_trace(trace, "ism", "registers", api=False)
    assert not any(t.startswith("api:") for t in without.lexicon)
    assert len(without.sequence) == len(with_api.sequence) - 2


def test_bsm_keys_blocks_by_normalised_content(trace: Trace) -> None:
    enc = encode_trace(trace, "bsm", "registers", api=True)
    keys = [enc.lexicon[i] for i in enc.sequence]
    assert len(keys) == 5 + 2  # 5 visits + 2 API pseudo-blocks after the first
    assert keys[1:3] == ["api:kernel32.createfilea", "api:kernel32.closehandle"]
    assert keys[3] == keys[4] == keys[5]  # the loop body, three times
    contents = dict(zip(enc.lexicon, enc.block_contents, strict=True))
    assert contents[keys[3]] == ("inc eax", "cmp eax,IMM", "jne ADDR")
    # The same code at another address is the same block key.
    moved = make_trace("b", [[(a + 0x10000, d) for a, d in LOOP]])
    moved_enc = encode_trace(moved, "bsm", "registers")
    assert moved_enc.lexicon == [keys[3]]


def test_imported_text_blocks_give_the_same_tokens_as_bytes() -> None:
    """A debugger's text log (MASM, no bytes) and the emulator's bytes make the same ISM/BSM tokens."""
    emulated = make_trace("c", [EPILOGUE])
    block = BasicBlock(0x402006, b"", (3, 1), texts=("MOV EAX,DWORD PTR SS:[EBP-8]", "RETN"))
    imported = Trace(TraceMeta("d" * 64, Arch.X86, "ollydbg"), [block], np.array([0], dtype=np.uint32))
    for rep in ("ism", "bsm"):
        a = encode_trace(emulated, rep, "registers")
        b = encode_trace(imported, rep, "registers")
        assert [a.lexicon[i] for i in a.sequence] == [b.lexicon[i] for i in b.sequence]


def test_max_tokens_truncates(trace: Trace) -> None:
    enc = encode_trace(trace, "ism", "registers", api=True, max_tokens=4)
    assert len(enc.sequence) == 4
    enc = encode_trace(trace, "bsm", "registers", api=False, max_tokens=2)
    assert len(enc.sequence) == 2


def test_min_instructions_leaves_out_short_traces(trace: Trace) -> None:
    short = make_trace("b", [PROLOGUE])  # 3 instructions
    data = build_dataset([trace, short], [1, 0], representation="ism", min_instructions=10)
    assert data.sha256s() == [trace.meta.sha256]
    assert data.meta["short"] == [{"trace": str(short), "instructions": 3}]
    assert len(build_dataset([trace, short], [1, 0], representation="ism")) == 2


def test_expand_matches_python_loop() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 50, size=rng.integers(0, 6)).astype(np.int32) for _ in range(20)]
    offsets = np.zeros(21, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    flat = np.concatenate(parts)
    visits = rng.integers(0, 20, size=200)
    expected = np.concatenate([parts[v] for v in visits])
    np.testing.assert_array_equal(expand(flat, offsets, visits), expected)


def test_dataset_merges_lexicons_and_keeps_labels(trace: Trace) -> None:
    other = make_trace("e", [OTHER_LOOP, OTHER_LOOP])
    data = build_dataset([trace, other], ["malicious", 0], representation="ism", groups=["fam1", "pkg2"])
    assert len(data) == 2
    np.testing.assert_array_equal(data.labels(), [1, 0])
    assert list(data.groups()) == ["fam1", "pkg2"]
    assert [data.lexicon[i] for i in data.sequence(1)] == naive_tokens(other, "registers")
    row = data.files.to_pylist()[0]
    assert row["n_instructions"] == trace.instruction_count and row["stop_reason"] == "exited"
    assert row["arch"] == "x86" and row["n_api_calls"] == 2
    assert row["tracer_version"] == (trace.meta.tracer_version or None)
    assert data.sequence(0).dtype == np.int32


@pytest.mark.parametrize("representation", ["ism", "bsm"])
def test_save_load_round_trip(tmp_path: Path, trace: Trace, representation: str) -> None:
    other = make_trace("e", [OTHER_LOOP, PROLOGUE])
    data = build_dataset(
        [trace, other], [1, 0], representation=representation, kinds=["exe", "dll"], window={"length": 7}
    )
    data.save(tmp_path / "ds")
    back = SequenceDataset.load(tmp_path / "ds")
    assert back.representation == representation
    assert back.normalisation == "registers" and back.api is True
    assert list(back.lexicon) == list(data.lexicon)
    assert back.files.equals(data.files)
    for i in range(len(data)):
        np.testing.assert_array_equal(back.sequence(i), data.sequence(i))
    assert back.window_defaults == {"length": 7}
    if representation == "bsm":
        assert list(back.instruction_lexicon) == list(data.instruction_lexicon)
        for k in range(len(data.lexicon)):
            np.testing.assert_array_equal(back.block_tokens(k), data.block_tokens(k))
    # Nothing pickled: every array loads with allow_pickle=False, the header is JSON.
    for npy in (tmp_path / "ds").glob("*.npy"):
        np.load(npy, allow_pickle=False)
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["format"] == "runtrace-dataset"


def test_build_from_paths_in_worker_processes_and_skip_bad_files(tmp_path: Path, trace: Trace) -> None:
    paths = []
    for i, t in enumerate([trace, make_trace("f", [OTHER_LOOP])]):
        paths.append(tmp_path / f"{i}.rtrace")
        save_trace(t, paths[-1])
    bad = tmp_path / "bad.rtrace"
    bad.write_bytes(b"not a trace")
    serial = build_dataset(paths, [1, 0], representation="bsm")
    parallel = build_dataset([*paths, bad], [1, 0, 0], representation="bsm", jobs=2, on_error="skip")
    assert len(parallel) == 2 and len(parallel.meta["skipped"]) == 1
    for i in range(2):
        a = [serial.lexicon[k] for k in serial.sequence(i)]
        b = [parallel.lexicon[k] for k in parallel.sequence(i)]
        assert a == b
    with pytest.raises(DatasetError):
        build_dataset([bad], [1])


def test_bad_inputs_are_reported() -> None:
    with pytest.raises(DatasetError):
        build_dataset([], [], representation="xyz")
    with pytest.raises(DatasetError):
        build_dataset([make_trace("a", [LOOP])], ["grayware"])
    with pytest.raises(DatasetError):
        SequenceDataset.load("/nonexistent/dataset")


def test_a_path_that_is_not_a_dataset_folder_is_one_error(tmp_path) -> None:
    (tmp_path / "trace.rtrace").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="trace.rtrace: not a runtrace dataset"):
        SequenceDataset.load(tmp_path / "trace.rtrace")
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(DatasetError, match="dataset.json names another format"):
        SequenceDataset.load(tmp_path)
    (tmp_path / "dataset.json").write_bytes(b"\xff\xfe")
    with pytest.raises(DatasetError, match="dataset.json"):
        SequenceDataset.load(tmp_path)


@pytest.mark.parametrize("vocabulary", [300, 70_000])
def test_spooled_ids_come_back_as_the_concatenation_in_the_datasets_dtype(
    vocabulary: int, tmp_path, monkeypatch
) -> None:
    """Traces wait on disk and are copied, a chunk at a time, into the dataset's dtype (16 bits while the
    lexicon fits them): the same ids as an int32 concatenation; the scratch file goes."""
    from runtrace.represent.dataset import _Spool

    monkeypatch.setattr(_Spool, "CHUNK", 7)  # many chunks, a part of one at the end
    rng = np.random.default_rng(vocabulary)
    ids = [rng.integers(0, vocabulary, size=rng.integers(0, 50)).astype(np.int32) for _ in range(30)]
    spool = _Spool(tmp_path / "x.spool")
    for a in ids:
        spool.append(a)
    np.testing.assert_array_equal(np.diff(spool.offsets()), [len(a) for a in ids])
    spool.finish(tmp_path / "x.npy", vocabulary)
    joined = np.load(tmp_path / "x.npy")
    assert joined.dtype == (np.uint16 if vocabulary <= 1 << 16 else np.int32)
    np.testing.assert_array_equal(joined, np.concatenate(ids))
    assert not (tmp_path / "x.spool").exists()


def test_a_build_into_a_folder_is_the_in_memory_build_memory_mapped(tmp_path) -> None:
    traces = [
        make_trace("a", [PROLOGUE, LOOP]),
        make_trace("b", [OTHER_LOOP]),
        make_trace("c", [LOOP, EPILOGUE]),
    ]
    for representation in ("ism", "bsm"):
        in_memory = build_dataset(traces, [1, 0, 1], representation=representation)
        on_disk = build_dataset(
            traces, [1, 0, 1], representation=representation, out=tmp_path / representation, meta={"k": 1}
        )
        assert isinstance(on_disk.tokens, np.memmap) and on_disk.meta["k"] == 1
        assert on_disk.files.equals(in_memory.files)
        assert list(on_disk.lexicon) == list(in_memory.lexicon)
        np.testing.assert_array_equal(on_disk.tokens, in_memory.tokens)
        np.testing.assert_array_equal(on_disk.offsets, in_memory.offsets)
        if representation == "bsm":
            np.testing.assert_array_equal(on_disk.block_flat, in_memory.block_flat)
            np.testing.assert_array_equal(on_disk.block_offsets, in_memory.block_offsets)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_a_failed_build_leaves_the_earlier_dataset_as_it_was(tmp_path) -> None:
    out = tmp_path / "d"
    build_dataset([make_trace("a", [LOOP])], [1], out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DatasetError, match="no trace could be used"):
        build_dataset([make_trace("b", [LOOP])], [0], out=out, min_instructions=10**9)
    with pytest.raises(DatasetError):
        build_dataset([tmp_path / "missing.rtrace"], [0], out=out)  # on_error="raise"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "d.partial").exists()
    assert len(SequenceDataset.load(out)) == 1


def test_a_folder_that_is_not_a_datasets_is_never_replaced(tmp_path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(DatasetError, match=r"notes: holds files that are not a dataset's \(thesis.tex\)"):
        build_dataset([make_trace("a", [LOOP])], [1], out=mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="exists and is not a folder"):
        build_dataset([make_trace("a", [LOOP])], [1], out=tmp_path / "file")
    build_dataset([make_trace("a", [LOOP])], [1], out=tmp_path / "empty")  # new folders are fine
    build_dataset([make_trace("b", [LOOP])], [0], out=tmp_path / "empty")  # and so is a dataset's
    assert SequenceDataset.load(tmp_path / "empty").sha256s() == ["b" * 64]

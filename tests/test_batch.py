"""The batch runner: isolation of failing samples, resume, summary."""

import gc
import os
import time

import pytest

from runtrace.trace.emulate import batch, forked
from runtrace.trace.emulate.batch import summarize, trace_batch
from runtrace.trace.emulate.emulator import TracerSettings
from runtrace.trace.emulate.inputs import InputProblem, iter_samples
from runtrace.trace.formats.native import TraceFormatError, load_trace, read_trace_summary, save_trace
from runtrace.trace.model import Trace


def test_resume_skips_traced_samples(tmp_path, cli32, cli64):
    out = tmp_path / "out"
    first = trace_batch(iter_samples([cli32, cli64]), out, workers=2)
    assert sorted(o.status for o in first) == ["ok", "ok"]
    again = trace_batch(iter_samples([cli32, cli64]), out, workers=2)
    assert [o.status for o in again] == ["skipped", "skipped"]
    # A reused trace is reported from its header and counts (not loaded whole), with the same figures.
    fields = ("instruction_count", "block_count", "visit_count", "api_call_count", "stop_reason", "path")
    by_sha = {o.sha256: o for o in first}
    assert all(getattr(o, f) == getattr(by_sha[o.sha256], f) for o in again for f in fields)
    # Other settings: traced again.
    other = trace_batch(iter_samples([cli32]), out, TracerSettings(max_instructions=100), workers=1)
    assert other[0].status == "ok" and other[0].stop_reason == "instruction_cap"


def test_a_damaged_trace_is_traced_again_not_reused(tmp_path, cli32):
    (first,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    trace = load_trace(first.path)
    broken = Trace(trace.meta, trace.blocks[:1], trace.visits, trace.api_calls)  # visits past its blocks
    save_trace(broken, first.path)
    with pytest.raises(TraceFormatError, match="damaged trace"):
        read_trace_summary(first.path)
    (again,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    assert again.status == "ok" and again.instruction_count == first.instruction_count


def test_duplicates_are_traced_once(tmp_path, cli32):
    outcomes = trace_batch(iter_samples([cli32, cli32]), tmp_path, workers=1)
    assert len(outcomes) == 1


def _count_frozen(trace, out_dir) -> None:  # an extra writer: runs in the tracer child
    (out_dir / "frozen.txt").write_text(str(gc.get_freeze_count()))


def test_a_tracer_child_freezes_what_it_inherits(tmp_path, cli32):
    """The child's collections must not walk the parent's objects (walking them copies their pages)."""
    inherited = [[] for _ in range(100)]  # objects the collector tracks, made here and not frozen
    before = gc.get_freeze_count()
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1, extra_writer=_count_frozen)
    assert outcome.status == "ok"
    assert int((tmp_path / "frozen.txt").read_text()) >= before + len(inherited)
    assert gc.get_freeze_count() == before  # only the child froze anything


def _crash(*args, **kwargs):
    os._exit(3)


def _hang(*args, **kwargs):
    time.sleep(60)


def _balloon(*args, **kwargs):
    hog = bytearray(400 * 1024 * 1024)
    hog[::4096] = b"x" * len(hog[::4096])
    time.sleep(60)


def test_a_crashing_sample_becomes_an_error(tmp_path, cli32, monkeypatch):
    monkeypatch.setattr(batch, "emulate", _crash)  # the forked child inherits the patch
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    assert outcome.status == "error" and "exit code 3" in outcome.error
    assert outcome.stop_reason == "crashed"


def test_a_hanging_sample_is_killed(tmp_path, cli32, monkeypatch):
    monkeypatch.setattr(batch, "emulate", _hang)
    monkeypatch.setattr(batch, "HARD_TIMEOUT_GRACE_S", 0.5)
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, TracerSettings(timeout_s=0.5), workers=1)
    # Left alone the child would sleep a minute and then return normally: "timeout" means it was killed.
    assert outcome.status == "error" and outcome.stop_reason == "timeout"


def test_a_memory_hog_is_killed(tmp_path, cli32, monkeypatch):
    monkeypatch.setattr(batch, "emulate", _balloon)
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, TracerSettings(memory_mb=300), workers=1)
    assert outcome.status == "error" and outcome.stop_reason == "memory_limit"
    assert outcome.error == "tracer process passed the memory cap of 300 MiB and was killed"


def test_errors_are_remembered_unless_retried(tmp_path, cli32, monkeypatch):
    monkeypatch.setattr(batch, "emulate", _crash)
    trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    monkeypatch.undo()
    (again,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    assert again.status == "error"
    (retried,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1, retry_errors=True)
    assert retried.status == "ok"


def test_a_tracer_that_cannot_start_stops_the_batch_and_blames_no_sample(tmp_path, cli32, monkeypatch):
    from runtrace.errors import SetupError
    from runtrace.trace.emulate import recorder

    # As in a source tree whose native part was never built: the module is not found.
    monkeypatch.setattr(recorder, "_LIB", None)
    monkeypatch.setattr(recorder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SetupError, match="not built"):
        trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    assert not list(tmp_path.glob("*.error.json"))
    monkeypatch.undo()
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, workers=1)
    assert outcome.status == "ok"


def test_summary_counts(tmp_path, cli32):
    outcomes = trace_batch([*iter_samples([cli32]), InputProblem("x", "no such file")], tmp_path, workers=1)
    s = summarize(outcomes)
    assert s["by_status"] == {"error": 1, "ok": 1}
    assert s["by_stop_reason"] == {"exited": 1}


def _child(target, *args) -> tuple[forked.ResultReader, forked.ForkedChild]:
    """A forked child running `target(writer, *args)` with the write end of a result pipe."""
    reader, writer = forked.result_pipe()
    child = forked.ForkedChild(target, (writer, *args))
    child.start()
    writer.close()
    return reader, child


def test_a_result_larger_than_the_pipe_comes_back_whole():
    payload = {"status": "ok", "data": "x" * 300_000, "events": list(range(10_000))}
    reader, child = _child(forked.ResultWriter.send, payload)
    assert forked.wait([reader], 30) == [reader] and reader.poll()
    assert reader.recv() == payload
    child.join()
    assert child.exitcode == 0
    reader.close()


def _nothing(writer) -> None:
    pass


def _header_only(writer) -> None:  # as a child killed while writing its result leaves it
    os.write(writer.fileno(), (1 << 20).to_bytes(8, "little"))


@pytest.mark.parametrize("target", [_nothing, _header_only])
def test_a_child_that_ends_without_a_whole_result_reads_as_end_of_file(target):
    reader, child = _child(target)
    child.join()
    assert forked.wait([reader], 5) == [reader] and reader.poll()  # readable: the writer is gone
    with pytest.raises(EOFError):
        reader.recv()
    reader.close()


def test_wait_times_out_with_nothing_ready_and_names_what_is_ready():
    reader, writer = forked.result_pipe()
    started = time.monotonic()
    assert forked.wait([reader], 0.05) == [] and not reader.poll()
    assert time.monotonic() - started >= 0.04
    writer.send({"a": 1})
    other_reader, other_writer = forked.result_pipe()
    assert forked.wait([other_reader, reader], 1) == [reader]
    assert reader.recv() == {"a": 1}
    for end in (reader, writer, other_reader, other_writer):
        end.close()

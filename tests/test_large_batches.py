"""Batches of any size: streamed inputs, the size limit, the memory cap on the child alone, Ctrl-C.

Large inputs are sparse files (written in no time, read back as zeros) behind a short non-PE header, so
the scanner has to hash them and its tracer children have to tell them apart from programs, as with
real junk files; two real programs sit beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from typer.testing import CliRunner

import runtrace.cli  # noqa: F401  (registers every command)
from runtrace.cli.app import app
from runtrace.trace.emulate.batch import trace_batch
from runtrace.trace.emulate.emulator import TracerSettings
from runtrace.trace.emulate.inputs import MIB, iter_samples
from runtrace.trace.formats.native import load_trace

runner = CliRunner()


def _sparse(path: Path, size: int, head: bytes = b"not a program\n") -> Path:
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def test_a_scan_over_more_than_a_gib_judges_the_real_programs(tmp_path, cli32, cli64):
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(5):  # 5 x 250 MiB = 1.22 GiB, each under the default 256 MiB limit
        _sparse(folder / f"junk-{i}.bin", 250 * MIB, head=f"junk {i}\n".encode())
    shutil.copy(cli32, folder / "cli-32.exe")
    shutil.copy(cli64, folder / "cli-64.exe")
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total > 1024 * MIB

    result = runner.invoke(app, ["scan", str(folder), "--json", "--explain", "0", "--workers", "2"])
    report = json.loads(result.stdout)
    by_name = {Path(r["name"]).name: r for r in report["results"]}
    assert len(by_name) == 7
    for program in ("cli-32.exe", "cli-64.exe"):
        assert by_name[program]["status"] == "ok", by_name[program]
        assert by_name[program]["verdict"] in ("benign", "malicious")
    for i in range(5):
        junk = by_name[f"junk-{i}.bin"]
        assert junk["status"] == "error" and "not a PE file" in junk["reason"]
    assert not any("memory cap" in (r["reason"] or "") for r in report["results"])


def test_inputs_over_the_size_limit_get_an_error_without_being_read(tmp_path, cli32):
    huge = _sparse(tmp_path / "huge.bin", 64 * 1024 * MIB)  # 64 GiB: reading it whole would not end soon
    items = list(iter_samples([huge, cli32]))
    assert (
        items[0].name == str(huge)
        and "65,536.0 MiB, larger than the size limit of 256 MiB" in items[0].message
    )
    assert items[1].sha256 and items[1].path == str(cli32)

    out = tmp_path / "out"
    result = runner.invoke(app, ["trace", str(huge), str(cli32), "-o", str(out), "--max-file-size", "1"])
    assert result.exit_code == 2, result.output  # an input failed; the other was traced
    assert "larger than the size limit of 1 MiB" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_status"] == {"error": 1, "ok": 1}
    bad = runner.invoke(app, ["trace", str(cli32), "-o", str(out), "--max-file-size", "-1"])
    assert bad.exit_code == 2 and "--max-file-size" in bad.output


def test_the_memory_cap_ignores_memory_shared_with_the_parent(tmp_path, cli32):
    # The parent holds 400 MiB of its own (touched, so resident); every forked child shares those pages.
    ballast = bytearray(400 * MIB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert psutil.Process().memory_info().rss > 400 * MIB
    (outcome,) = trace_batch(iter_samples([cli32]), tmp_path, TracerSettings(memory_mb=200), workers=1)
    assert outcome.status == "ok", outcome.error
    assert outcome.peak_rss_mb > 200  # the child's resident size counts the shared pages; the cap does not
    del ballast


# Runs `runtrace trace` with the second sample hanging, so Ctrl-C always finds one sample finished
# and one running.  The marker file says when the first outcome has reached the parent.  Python keeps
# SIGINT ignored when it starts with it ignored, as under a test run started as a background job (CI,
# `cmd &` in a script); Ctrl-C from a terminal is what is tested, so the handler is put back.
_HANGING_TRACE = """
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
import runtrace.trace.emulate.batch as batch
from runtrace.cli import main

marker, pids = Path(sys.argv[1]), Path(sys.argv[2])
real_emulate, real_batch = batch.emulate, batch.trace_batch

def emulate(data, sha256, name, settings):
    if name.endswith("cli-64.exe"):
        pids.write_text(str(os.getpid()))
        time.sleep(3600)
    return real_emulate(data, sha256, name, settings)

def trace_batch(*args, on_done=None, **kwargs):
    def done(outcome):
        on_done(outcome)
        marker.write_text(outcome.name)
    return real_batch(*args, on_done=done, **kwargs)

batch.emulate, batch.trace_batch = emulate, trace_batch
sys.argv = ["runtrace", *sys.argv[3:]]
main()
"""


def _wait_for(path: Path, proc: subprocess.Popen, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s  # a generous bound so a broken run fails instead of hanging
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.1)


def test_ctrl_c_stops_the_children_and_keeps_what_finished(tmp_path, cli32, cli64):
    out, marker, pids = tmp_path / "out", tmp_path / "first-done", tmp_path / "hanging-pid"
    command = [sys.executable, "-c", _HANGING_TRACE, str(marker), str(pids)]
    command += ["trace", str(cli32), str(cli64), "-o", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc)
    _wait_for(pids, proc)
    hanging = int(pids.read_text())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)  # a hang guard, not a timing check

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted: 1 samples finished" in stderr
    assert not psutil.pid_exists(hanging)  # killed and reaped, not left running
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == {"unfinished": 1}
    (done,) = summary["outcomes"]
    assert done["name"] == str(cli32) and done["status"] == "ok"
    assert load_trace(done["path"]).instruction_count == done["instruction_count"]
    assert not list(out.glob("*.part"))

    again = runner.invoke(app, ["trace", str(cli32), str(cli64), "-o", str(out)])
    assert again.exit_code == 0, again.output
    statuses = {o["name"]: o["status"] for o in json.loads((out / "summary.json").read_text())["outcomes"]}
    assert statuses == {str(cli32): "skipped", str(cli64): "ok"}


def test_a_sample_changed_after_listing_is_not_traced_under_the_old_hash(tmp_path, cli32, cli64):
    copy = tmp_path / "prog.exe"
    shutil.copy(cli32, copy)
    (sample,) = iter_samples([copy])
    shutil.copy(cli64, copy)
    os.utime(copy)
    (outcome,) = trace_batch([sample], tmp_path / "out", workers=1)
    assert outcome.status == "error" and "changed on disk" in outcome.error

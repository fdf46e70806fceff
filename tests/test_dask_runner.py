"""Tracing on a Dask cluster (a LocalCluster here) gives the local pool's outputs and resumes as it does."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtrace.cli import app
from runtrace.corpus.manifest import read_manifest
from runtrace.trace.emulate import dask_runner
from runtrace.trace.emulate.batch import BatchInterrupted, trace_batch
from runtrace.trace.emulate.dask_runner import DaskUnavailable, trace_batch_dask
from runtrace.trace.emulate.emulator import TracerSettings
from runtrace.trace.emulate.inputs import iter_samples
from runtrace.trace.formats.native import load_trace
from test_corpus_cli import tiny_corpus  # noqa: F401  (a fixture)

distributed = pytest.importorskip("distributed")

SETTINGS = TracerSettings(max_instructions=100_000, timeout_s=30.0)
runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler():
    # Threads, not processes: two cores, and each task forks its own tracer child anyway.
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def inputs(tmp_path, cli32, cli64):
    text = tmp_path / "readme.txt"
    text.write_text("not a program\n")
    return [cli32, cli64, cli32, text, tmp_path / "missing.exe"]


def _facts(outcomes) -> dict:
    keys = ("status", "arch", "instruction_count", "block_count", "visit_count", "api_call_count",
            "stop_reason", "stop_detail", "error")  # fmt: skip
    return {(o.sha256, o.name): tuple(getattr(o, k) for k in keys) for o in outcomes}


def test_the_cluster_writes_what_the_local_pool_writes(tmp_path, scheduler, inputs):
    local = trace_batch(iter_samples(inputs), tmp_path / "local", SETTINGS, 2)
    remote = trace_batch_dask(iter_samples(inputs), tmp_path / "dask", scheduler, SETTINGS)
    assert _facts(remote) == _facts(local)
    assert len(remote) == 4 and sum(o.status == "ok" for o in remote) == 2  # the duplicate is traced once
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )
    for o in remote:
        if o.status == "ok":
            assert o.path.startswith(str(tmp_path / "dask"))
            a, b = load_trace(o.path), load_trace(tmp_path / "local" / f"{o.sha256}.rtrace")
            assert (a.visits == b.visits).all() and a.api_calls == b.api_calls


def test_a_second_run_resumes(tmp_path, scheduler, inputs):
    first = trace_batch_dask(iter_samples(inputs), tmp_path, scheduler, SETTINGS)
    again = trace_batch_dask(iter_samples(inputs), tmp_path, scheduler, SETTINGS)
    assert sorted(o.status for o in again) == ["error", "error", "skipped", "skipped"]
    # The local pool takes over a folder the cluster filled, and the other way round.
    assert _facts(trace_batch(iter_samples(inputs), tmp_path, SETTINGS, 1)) == _facts(again)
    assert {o.sha256 for o in first if o.status == "ok"} == {o.sha256 for o in again if o.status == "skipped"}


def test_ctrl_c_on_the_cluster_keeps_what_finished(tmp_path, scheduler, cli32, cli64, monkeypatch):
    """Ctrl-C (here raised where the first outcome arrives) ends the run as the local pool's does: the
    finished outcome kept, the rest counted, and `trace` writes summary.json and exits 130."""
    out = tmp_path / "out"

    def interrupt_after_the_first(outcome) -> None:
        raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as stop:
        trace_batch_dask(iter_samples([cli32, cli64]), out, scheduler, SETTINGS, interrupt_after_the_first)
    assert len(stop.value.outcomes) == 1 and stop.value.unfinished == 1

    calls = []

    def interrupted_batch(*args, on_done=None, **kwargs):
        calls.append(1)
        raise BatchInterrupted([], 2)

    monkeypatch.setattr(dask_runner, "trace_batch_dask", interrupted_batch)
    result = runner.invoke(app, ["trace", str(cli32), str(cli64), "-o", str(out), "--dask", scheduler])
    assert calls and result.exit_code == 130, result.output
    assert json.loads((out / "summary.json").read_text())["interrupted"] == {"unfinished": 2}


def test_trace_command_on_dask(tmp_path, scheduler, cli32):
    out = tmp_path / "out"
    result = runner.invoke(app, ["trace", str(cli32), "-o", str(out), "--dask", scheduler, "--timeout", "30"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_status"] == {"ok": 1}


def test_corpus_trace_on_dask_matches_the_local_pool(tiny_corpus, scheduler):  # noqa: F811
    corpus, _ = tiny_corpus
    manifest = corpus / "manifest.parquet"
    args = ["corpus", "trace", "--corpus-dir", str(corpus), "--limit", "4", "--max-instructions", "20000"]
    assert runner.invoke(app, [*args, "-o", str(corpus / "local")]).exit_code == 0
    local = read_manifest(manifest).to_pylist()
    result = runner.invoke(app, [*args, "-o", str(corpus / "dask"), "--dask", scheduler])
    assert result.exit_code == 0, result.output
    remote = read_manifest(manifest).to_pylist()

    def columns(rows):
        return [{k: v for k, v in r.items() if k != "trace_path"} for r in rows]

    assert columns(remote) == columns(local)
    assert sum(r["trace_status"] is not None for r in remote) == 4


def test_no_scheduler_is_a_one_line_error(tmp_path, monkeypatch, cli32):
    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(DaskUnavailable, match="no Dask scheduler at tcp://127.0.0.1:9"):
        trace_batch_dask(iter_samples([cli32]), tmp_path, "tcp://127.0.0.1:9", SETTINGS)
    result = runner.invoke(app, ["trace", str(cli32), "-o", str(tmp_path), "--dask", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2 and "no Dask scheduler" in result.output and "Traceback" not in result.output


def test_scan_on_dask_gives_the_local_verdict(scheduler, cli32):
    from runtrace.paths import default_model_dir

    def scan(*extra: str) -> dict:
        args = ["scan", "--json", "--model", str(default_model_dir()), "--max-instructions", "200000"]
        result = runner.invoke(app, [*args, *extra, str(cli32)])
        return json.loads(result.stdout)["results"][0]

    local, remote = scan(), scan("--dask", scheduler)
    assert remote["status"] == "ok" and remote["trace"]["instructions"] == local["trace"]["instructions"]
    assert remote["probability"] == local["probability"] and remote["verdict"] == local["verdict"]


@pytest.fixture(scope="module")
def command_line_cluster(tmp_path_factory):
    """A scheduler and a worker started as `dask scheduler` and `dask worker ADDRESS` start them: the
    worker runs under a nanny, in a daemonic process."""
    folder = tmp_path_factory.mktemp("dask")
    dask_cli = Path(sys.executable).with_name("dask")
    scheduler_file = folder / "scheduler.json"
    started = []

    def start(*args: str) -> None:
        log = open(folder / f"{args[0]}.log", "wb")  # noqa: SIM115  (closed with the process)
        started.append((subprocess.Popen([str(dask_cli), *args], stdout=log, stderr=log, cwd=folder), log))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
              "--scheduler-file", str(scheduler_file))  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        start("worker", address)
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
            daemonic = client.run(lambda: multiprocessing.current_process().daemon)
        yield address, daemonic
    finally:
        for process, log in started[::-1]:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def test_a_default_dask_worker_traces(tmp_path, cli32, cli64, command_line_cluster):
    """`dask worker` with its defaults runs tasks in a daemonic process, where multiprocessing refuses
    to start a child; the tracer's child is forked without it, under the same caps."""
    address, daemonic = command_line_cluster
    assert list(daemonic.values()) == [True]
    local = trace_batch(iter_samples([cli32, cli64]), tmp_path / "local", SETTINGS, 2)
    remote = trace_batch_dask(iter_samples([cli32, cli64]), tmp_path / "dask", address, SETTINGS)
    assert _facts(remote) == _facts(local)
    assert [o.status for o in remote] == ["ok", "ok"] and min(o.instruction_count for o in remote) > 1000
    # The caps still hold there: a time limit the tracer child cannot meet ends in the batch's error.
    slow = TracerSettings(max_instructions=100_000, timeout_s=0.001, memory_mb=1)
    (capped,) = trace_batch_dask(iter_samples([cli32]), tmp_path / "capped", address, slow)
    assert capped.status == "error" and "memory cap of 1 MiB" in capped.error

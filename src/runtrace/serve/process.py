"""The service as a child process on a free local port: for the end-to-end test, the benchmark and the
screenshot script, which all need the real server (uvicorn, the worker pool), not an in-process app."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(state_dir: Path, *args: str) -> Iterator[str]:
    """`runtrace serve` on 127.0.0.1 with its database in `state_dir`; yields the base URL and stops the
    server on exit.  `args` are more `runtrace serve` options."""
    with server_process(state_dir, *args) as (url, _):
        yield url


@contextmanager
def server_process(state_dir: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`serving`, yielding the server's process too (the benchmark reads its CPU time)."""
    port = free_port()
    log = open(state_dir / "serve.log", "wb")  # noqa: SIM115 - closed below, after the server stops
    command = [
        sys.executable,
        "-m",
        "runtrace",
        "serve",
        "--port",
        str(port),
        "--db",
        str(state_dir / "scans.db"),
    ]
    proc = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, state_dir / "serve.log")
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"runtrace serve exited with status {proc.returncode}: {log.read_text()[-500:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"runtrace serve did not answer within {STARTUP_S:.0f} s")

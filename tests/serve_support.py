"""Helpers for the service's tests: a service on a temporary database, and waiting for scans."""

from __future__ import annotations

import time
from pathlib import Path

from runtrace.serve.jobs import ScanService, ScanSettings
from runtrace.serve.store import JobStore, SampleStore
from runtrace.trace.settings import TracerSettings

FINISHED = ("done", "error")
# Scans of the fixtures take a second or two each; this only bounds a hung test.
WAIT_S = 180.0


def make_service(state: Path, workers: int = 1) -> ScanService:
    settings = ScanSettings(tracer=TracerSettings(max_instructions=200_000, timeout_s=30.0))
    return ScanService(settings, JobStore(state / "scans.db"), SampleStore(state / "samples"), workers)


def wait_for(client, scan_id: str, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        scan = client.get(f"/api/v1/scans/{scan_id}", headers=headers or {}).json()
        if scan["status"] in FINISHED or time.monotonic() > deadline:
            return scan
        time.sleep(0.2)

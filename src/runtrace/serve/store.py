"""What the service keeps: scan jobs in SQLite (WAL) and uploaded samples on disk, by sha256.

The database is the job queue: a job is a row whose status goes queued -> running -> done | error, and
workers claim the oldest queued row.  Nothing about the queue lives only in memory, so a restart loses
nothing: rows left `running` by a stopped server are queued again when it starts.  Every upload is a
batch (a zip archive of samples is one batch of one scan per member), so its members can be followed
together.  Times are stored as Unix seconds and shown as ISO 8601 (UTC).

Samples are stored as `samples/ab/abcdef...` (the first two hex digits fan the directory out), written
atomically, readable only by the owner and never executable: the service reads them, the tracer emulates
them, nothing runs them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,          -- queued, running, done, error
    model_key TEXT NOT NULL,       -- weights sha256, version[, index sha256]: reused only for the same ones
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT                    -- the scan's FileResult (JSON), for done and error
);
CREATE INDEX IF NOT EXISTS scans_sha ON scans (sha256, model_key, status);
CREATE INDEX IF NOT EXISTS scans_queue ON scans (status, created);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,            -- the uploaded file's name
    created REAL NOT NULL
);
"""
# Added to databases made before batches existed (their scans belong to no batch).
_MIGRATIONS = {"batch": "ALTER TABLE scans ADD COLUMN batch TEXT"}


def iso_time(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, to the millisecond: `2026-12-09T10:21:33.120Z`."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    sha256: str
    name: str
    status: str
    model_key: str
    created: float
    started: float | None
    finished: float | None
    result: dict | None
    batch: str | None = None

    def public(self) -> dict:
        return {
            "id": self.id,
            "batch": self.batch,
            "name": self.name,
            "sha256": self.sha256,
            "status": self.status,
            "created": iso_time(self.created),
            "started": iso_time(self.started),
            "finished": iso_time(self.finished),
            "result": self.result,
        }

    def brief(self) -> dict:
        """The scan as a batch lists it: no result, only its verdict."""
        verdict = (self.result or {}).get("verdict")
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.sha256,
            "status": self.status,
            "verdict": verdict,
        }


@dataclass
class Batch:
    id: str
    name: str
    created: float
    scans: list[Job]

    @property
    def status(self) -> str:
        """queued (nothing started), running (something not finished) or done (every scan finished,
        done or error)."""
        states = {j.status for j in self.scans}
        if states <= {"done", "error"}:
            return "done"
        return "queued" if states == {"queued"} else "running"

    def public(self) -> dict:
        counts = {k: sum(j.status == k for j in self.scans) for k in ("queued", "running", "done", "error")}
        return {
            "id": self.id,
            "name": self.name,
            "created": iso_time(self.created),
            "status": self.status,
            "counts": counts,
            "scans": [j.brief() for j in self.scans],
        }


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        sha256=row["sha256"],
        name=row["name"],
        status=row["status"],
        model_key=row["model_key"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        result=json.loads(row["result"]) if row["result"] else None,
        batch=row["batch"],
    )


class JobStore:
    """Thread-safe access to the jobs table.  One connection guarded by a lock: the service's writes are
    tiny and few (a handful per scan), so a connection pool would buy nothing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(scans)")}
        for column, statement in _MIGRATIONS.items():
            if column not in columns:
                self._db.execute(statement)
        self._db.execute("CREATE INDEX IF NOT EXISTS scans_batch ON scans (batch, created)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def requeue_interrupted(self) -> int:
        """Jobs a stopped server left running are queued again (their tracer children died with it)."""
        with self._lock:
            cur = self._db.execute("UPDATE scans SET status='queued', started=NULL WHERE status='running'")
            return cur.rowcount

    def add_batch(self, name: str) -> str:
        batch_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute(
                "INSERT INTO batches (id, name, created) VALUES (?, ?, ?)", (batch_id, name, time.time())
            )
        return batch_id

    def batch(self, batch_id: str) -> Batch | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
            rows = self._db.execute(
                "SELECT * FROM scans WHERE batch=? ORDER BY created, rowid", (batch_id,)
            ).fetchall()
        return Batch(row["id"], row["name"], row["created"], [_job(r) for r in rows]) if row else None

    def add(
        self, sha256: str, name: str, model_key: str, result: dict | None = None, batch: str | None = None
    ) -> Job:
        """A new job: queued, or done at once when `result` (an earlier scan of the same bytes) is given."""
        now = time.time()
        job_id = uuid.uuid4().hex
        status = "queued" if result is None else result_status(result)
        with self._lock:
            self._db.execute(
                "INSERT INTO scans (id, sha256, name, status, model_key, created, started, finished, result,"
                " batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, sha256, name, status, model_key, now, None if result is None else now,
                 None if result is None else now, None if result is None else json.dumps(result), batch),
            )  # fmt: skip
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM scans WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def find(self, sha256: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first; all jobs, or those for one sha256."""
        with self._lock:
            if sha256:
                rows = self._db.execute(
                    "SELECT * FROM scans WHERE sha256=? ORDER BY created DESC LIMIT ?", (sha256, limit)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM scans ORDER BY created DESC LIMIT ?", (limit,)
                ).fetchall()
        return [_job(r) for r in rows]

    def reusable_result(self, sha256: str, model_key: str) -> dict | None:
        """The newest finished result for these bytes and this model (an error of the tracer counts too:
        the same bytes fail the same way), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT result FROM scans WHERE sha256=? AND model_key=? AND status IN ('done', 'error')"
                " AND result IS NOT NULL ORDER BY finished DESC LIMIT 1",
                (sha256, model_key),
            ).fetchone()
        return json.loads(row["result"]) if row else None

    def claim(self) -> Job | None:
        """The oldest queued job, now marked running; None when the queue is empty."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM scans WHERE status='queued' ORDER BY created LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE scans SET status='running', started=? WHERE id=?", (time.time(), row["id"])
            )
        return self.get(row["id"])

    def finish(self, job_id: str, result: dict) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE scans SET status=?, finished=?, result=? WHERE id=? AND status='running'",
                (result_status(result), time.time(), json.dumps(result), job_id),
            )

    def newest(self, sha256: str) -> Job | None:
        """The newest scan of a file, finished ones first."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM scans WHERE sha256=? ORDER BY status IN ('done', 'error') DESC, created DESC"
                " LIMIT 1",
                (sha256,),
            ).fetchone()
        return _job(row) if row else None

    def delete(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None:
            with self._lock:
                self._db.execute("DELETE FROM scans WHERE id=?", (job_id,))
                if job.batch:  # the batch goes with its last scan
                    self._db.execute(
                        "DELETE FROM batches WHERE id=? AND NOT EXISTS (SELECT 1 FROM scans WHERE batch=?)",
                        (job.batch, job.batch),
                    )
        return job

    def references(self, sha256: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM scans WHERE sha256=?", (sha256,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM scans GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}


def result_status(result: dict) -> str:
    return "done" if result.get("status") == "ok" else "error"


class SampleStore:
    """Uploaded bytes by sha256.  Only ever read; never made executable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> Path:
        path = self.path(sha256)
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: a reader sees all the bytes or no file
        return path

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

"""The HTTP API, version 1: submit files, follow their scans and batches, find earlier results, download
traces, describe the model.  Every route declares its answer's shape (`response_model`), so the OpenAPI
description at /openapi.json says what each returns."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from runtrace import __version__
from runtrace.serve.jobs import ScanService
from runtrace.serve.store import Job
from runtrace.serve.uploads import UploadRejected, unpack_upload

_READ_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
Status = Literal["queued", "running", "done", "error"]
FINISHED = ("done", "error")
# The longest a `GET /scans/{id}?wait=` holds its answer back; the client asks again if it wants more.
MAX_WAIT_S = 30.0


# --- what the routes answer --------------------------------------------------------------------------
class ScanRecord(BaseModel):
    id: str
    batch: str | None = Field(
        description="the upload this scan came from (None for scans made before batches)"
    )
    name: str = Field(description="the uploaded file's name, or archive.zip:member")
    sha256: str
    status: Status
    created: str = Field(description="ISO 8601, UTC")
    started: str | None
    finished: str | None
    result: dict | None = Field(
        description="the FileResult `runtrace scan --json` writes; null until finished"
    )


class ScanBrief(BaseModel):
    id: str
    name: str
    sha256: str
    status: Status
    verdict: str | None


class BatchRecord(BaseModel):
    id: str
    name: str = Field(description="the uploaded file's name")
    created: str
    status: Literal["queued", "running", "done"] = Field(
        description="done only when every scan of the batch has finished (done or error)"
    )
    counts: dict[str, int] = Field(description="scans by status")
    scans: list[ScanBrief]


class Submitted(BatchRecord):
    batch: str = Field(description="the batch id (GET /batches/{batch})")
    id: str = Field(description="the first scan's id")
    ids: list[str] = Field(description="every scan's id, in the archive's order")


class ScanList(BaseModel):
    scans: list[ScanRecord]


class Deleted(BaseModel):
    id: str
    deleted: bool


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    workers: int
    scans: dict[str, int]


class ModelDescription(BaseModel):
    model: dict
    decision: dict
    similar: dict | None = None  # the similarity index beside the model (IndexInfo); None without one
    tracer_version: str = ""  # the tracer the service emulates with
    warnings: list[str] = []  # what limits every verdict (a model trained on another tracer revision)


# --- plumbing ----------------------------------------------------------------------------------------
def service(request: Request) -> ScanService:
    return request.app.state.service


def check_token(request: Request) -> None:
    """With a token configured, every API call must carry it (`Authorization: Bearer TOKEN` or
    `X-Runtrace-Token: TOKEN`); compared in constant time."""
    expected = request.app.state.token
    if not expected:
        return
    given = request.headers.get("x-runtrace-token") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/api/v1", dependencies=[Depends(check_token)])


def _scan(request: Request, key: str) -> Job:
    """A scan by its id, or the newest scan of a file by its sha256."""
    jobs = service(request).jobs
    job = jobs.newest(key.lower()) if _SHA256.fullmatch(key) else jobs.get(key)
    if job is None:
        raise HTTPException(404, f"no scan {key}")
    return job


# --- routes ------------------------------------------------------------------------------------------
@router.post("/scans", status_code=202, response_model=Submitted)
async def submit_scan(
    request: Request,
    file: UploadFile = File(..., description="a PE file, a trace file, or a zip archive of them"),
    password: str | None = Form(None, description="zip password (malware archives usually use 'infected')"),
) -> dict:
    """Queue the scans of one upload: a batch of one scan per archive member (one scan for anything
    else).  `status` is the batch's: `done` only once every member has finished."""
    limit = request.app.state.max_upload_bytes
    name = file.filename or "upload"
    data = bytearray()
    while chunk := await file.read(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"{name}: larger than the upload limit of {limit} bytes")
    try:
        # Inflating archives, hashing and writing samples are blocking work: off the event loop.
        files = await run_in_threadpool(unpack_upload, name, bytes(data), password, limit)
    except UploadRejected as e:
        raise HTTPException(e.status_code, str(e)) from None
    svc = service(request)

    def submit_all() -> str:
        return svc.submit_batch(name, [(hashlib.sha256(f.data).hexdigest(), f.name, f.data) for f in files])

    batch = svc.jobs.batch(await run_in_threadpool(submit_all)).public()
    ids = [s["id"] for s in batch["scans"]]
    return {**batch, "batch": batch["id"], "id": ids[0], "ids": ids}


@router.get("/batches/{batch_id}", response_model=BatchRecord)
def get_batch(batch_id: str, request: Request) -> dict:
    """One upload's scans and how far they are."""
    batch = service(request).jobs.batch(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return batch.public()


@router.get("/scans/{key}", response_model=ScanRecord)
async def get_scan(
    key: str,
    request: Request,
    wait: float = Query(
        0.0,
        ge=0.0,
        le=MAX_WAIT_S,
        description="seconds to hold the answer back while the scan is queued or running: it comes as "
        "soon as the scan finishes (or is deleted: 404), else with the scan as it is after `wait` seconds",
    ),
) -> dict:
    """A scan by its id, or the newest scan of a file by the file's sha256 (finished scans first)."""
    job = await run_in_threadpool(_scan, request, key)
    if wait > 0 and job.status not in FINISHED:
        job = await _finished(request, job, wait)
    return job.public()


async def _finished(request: Request, job: Job, wait: float) -> Job:
    """The job once it finishes, or as it is after `wait` seconds; 404 when it is deleted meanwhile.

    A client waiting for a scan asks once instead of polling: each request costs the server CPU that
    the scans running beside it need (about 1 ms for a small GET on 2 cores, measured; the benchmark's
    client, asking after each of 100 unfinished scans every half second, made over a thousand)."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:  # called from a worker thread
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (the server stopped)
            loop.call_soon_threadsafe(changed.set)

    unwatch = service(request).watch(job.id, wake)
    try:
        job = await run_in_threadpool(_scan, request, job.id)  # it may have finished before the watch
        if job.status not in FINISHED:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
            job = await run_in_threadpool(_scan, request, job.id)
    finally:
        unwatch()
    return job


@router.get(
    "/scans/{key}/trace",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the run trace"}},
)
async def download_trace(
    key: str,
    request: Request,
    format: Literal["native", "x64dbg", "text"] = Query(  # noqa: A002  (the query parameter's name)
        "native", description="native (.rtrace), x64dbg (.trace32/.trace64) or text (x64dbg-style log)"
    ),
):
    """The run trace a finished scan read: the one its emulation recorded, or the uploaded trace."""
    svc = service(request)
    job = _scan(request, key)
    path = svc.trace_file(job)
    if path is None:
        raise HTTPException(404, f"scan {job.id} has no trace ({job.status})")
    if format == "native" and job.result.get("input_kind") != "trace":
        return FileResponse(path, media_type="application/octet-stream", filename=f"{job.sha256}.rtrace")
    return await run_in_threadpool(_converted, path, job, format)


def _converted(path: Path, job: Job, fmt: str) -> FileResponse:
    from runtrace.trace.formats.registry import TraceReadError, load_any, save_as

    try:
        trace = load_any(path, name=job.name)
        suffix = {"native": ".rtrace", "text": ".txt"}.get(fmt) or (
            ".trace32" if trace.arch.bits == 32 else ".trace64"
        )
        out = (
            Path(tempfile.mkdtemp(prefix="runtrace-download-")) / f"{trace.meta.sha256 or job.sha256}{suffix}"
        )
        save_as(trace, out, fmt)
    except (TraceReadError, ValueError, OSError) as e:
        raise HTTPException(422, f"{job.name}: cannot write it as {fmt}: {e}") from None
    return FileResponse(
        out, media_type="application/octet-stream", filename=out.name, background=BackgroundTask(_remove, out)
    )


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.parent.rmdir()


@router.get("/scans", response_model=ScanList)
def list_scans(
    request: Request,
    sha256: str | None = Query(None, description="only scans of the file with this sha256"),
    limit: int = Query(50, ge=1, le=1000),
) -> dict:
    """Earlier scans, newest first."""
    jobs = service(request).jobs.find(sha256.lower() if sha256 else None, limit)
    return {"scans": [j.public() for j in jobs]}


@router.delete("/scans/{scan_id}", response_model=Deleted)
def delete_scan(scan_id: str, request: Request) -> dict:
    """Forget a scan (stopping it if it runs); the stored sample and its trace go when no scan refers
    to them any more."""
    job = service(request).delete(scan_id)
    if job is None:
        raise HTTPException(404, f"no scan {scan_id}")
    return {"id": scan_id, "deleted": True}


@router.get("/health", response_model=Health)
def health(request: Request) -> dict:
    svc = service(request)
    return {"status": "ok", "version": __version__, "workers": svc.workers, "scans": svc.jobs.counts()}


@router.get("/model", response_model=ModelDescription)
def model(request: Request) -> dict:
    return service(request).model_description()

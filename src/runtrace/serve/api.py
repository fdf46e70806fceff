"""The HTTP API, version 1: submit files, follow their scans, find earlier results, describe the model."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from runtrace import __version__
from runtrace.serve.jobs import ScanService
from runtrace.serve.uploads import UploadRejected, unpack_upload

_READ_CHUNK = 1 << 20


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


@router.post("/scans", status_code=202)
async def submit_scan(
    request: Request,
    file: UploadFile = File(..., description="a PE file, a trace file, or a zip archive of them"),
    password: str | None = Form(None, description="zip password (malware archives usually use 'infected')"),
) -> JSONResponse:
    """Queue a scan. A zip archive of samples becomes one scan per member: `id` is the first, `ids` all."""
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

    def submit_all() -> list:
        return [svc.submit(hashlib.sha256(f.data).hexdigest(), f.name, f.data) for f in files]

    jobs = await run_in_threadpool(submit_all)
    body = {"id": jobs[0].id, "ids": [j.id for j in jobs], "status": jobs[0].status}
    return JSONResponse(body, status_code=202)


@router.get("/scans/{scan_id}")
def get_scan(scan_id: str, request: Request) -> dict:
    job = service(request).jobs.get(scan_id)
    if job is None:
        raise HTTPException(404, f"no scan {scan_id}")
    return job.public()


@router.get("/scans")
def list_scans(
    request: Request,
    sha256: str | None = Query(None, description="only scans of the file with this sha256"),
    limit: int = Query(50, ge=1, le=1000),
) -> dict:
    """Earlier scans, newest first."""
    jobs = service(request).jobs.find(sha256.lower() if sha256 else None, limit)
    return {"scans": [j.public() for j in jobs]}


@router.delete("/scans/{scan_id}")
def delete_scan(scan_id: str, request: Request) -> dict:
    """Forget a scan (stopping it if it runs); the stored sample goes when no scan refers to it."""
    job = service(request).delete(scan_id)
    if job is None:
        raise HTTPException(404, f"no scan {scan_id}")
    return {"id": scan_id, "deleted": True}


@router.get("/health")
def health(request: Request) -> dict:
    svc = service(request)
    return {"status": "ok", "version": __version__, "workers": svc.workers, "scans": svc.jobs.counts()}


@router.get("/model")
def model(request: Request) -> dict:
    return service(request).model_description()

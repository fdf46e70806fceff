"""The FastAPI application: the API under /api/v1, the page at /, OpenAPI docs at /docs."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from runtrace import __version__
from runtrace.serve.api import router
from runtrace.serve.jobs import ScanService

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
# Multipart framing (boundaries, headers, the password field) around the file's bytes.
_FORM_OVERHEAD = 64 * 1024


def create_app(service: ScanService, token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD):
    """The app; its lifespan starts the service's workers and stops them (queued work stays queued)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="runtrace",
        version=__version__,
        description="Scan Windows programs by their emulated run traces. Samples are emulated, never run.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.token = token
    app.state.max_upload_bytes = max_upload_bytes

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Refused before the body is read: a declared length past the limit never reaches the parser.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + _FORM_OVERHEAD:
            return JSONResponse(
                {"detail": f"request of {length} bytes is over the upload limit of {max_upload_bytes}"},
                status_code=413,
            )
        return await call_next(request)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app

"""The FastAPI application: the API under /api/v1, the page at /, OpenAPI docs at /docs; one line per
request in the access log; every error answered with a one-line `detail`."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from runtrace import __version__
from runtrace.serve.api import router
from runtrace.serve.jobs import ScanService
from runtrace.serve.store import iso_time

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
# Multipart framing (boundaries, headers, the password field) around the file's bytes.
_FORM_OVERHEAD = 64 * 1024


ACCESS_LOG = "runtrace.access"


def access_logger(path: Path | None) -> logging.Logger:
    """The access log: a file (appended to), or standard error when `path` is None."""
    log = logging.getLogger(ACCESS_LOG)
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, encoding="utf-8") if path is not None else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return log


def create_app(service: ScanService, token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD):
    """The app; its lifespan starts the service's workers and stops them (queued work stays queued).
    Each request is logged on the `runtrace.access` logger (`access_logger` sends it to a file)."""

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
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from the package
        redoc_url=None,
    )
    app.state.service = service
    app.state.token = token
    app.state.max_upload_bytes = max_upload_bytes

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI answers a list of error objects; every other error of this API is one line.
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

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

    access = logging.getLogger(ACCESS_LOG)

    @app.middleware("http")
    async def log_access(request: Request, call_next):
        # Added last, so it wraps everything (the 413 above included).  One line a request: when (ISO
        # 8601), who, what, the answer's status and how long it took; never the headers (the token).
        started = time.time()
        response = await call_next(request)
        client = request.client.host if request.client else "-"
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        elapsed = (time.time() - started) * 1000
        access.info(
            f'{iso_time(started)} {client} "{request.method} {target}" {response.status_code} {elapsed:.1f}ms'
        )
        return response

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=Path(str(swagger_ui_path))), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="runtrace API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app

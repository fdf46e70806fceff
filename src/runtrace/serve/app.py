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


class _RefuseLargeBodies:
    """A request whose declared length is past the upload limit is refused (413) before its body is
    read: it never reaches the multipart parser."""

    def __init__(self, app, max_upload_bytes: int) -> None:
        self.app, self.limit = app, max_upload_bytes + _FORM_OVERHEAD

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
            if length.isdigit() and int(length) > self.limit:
                limit = self.limit - _FORM_OVERHEAD
                detail = f"request of {length.decode()} bytes is over the upload limit of {limit}"
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _AccessLog:
    """One line a request on the `runtrace.access` logger: when (ISO 8601), who, what, the answer's
    status and how long it took to send; never the headers (the token)."""

    def __init__(self, app) -> None:
        self.app = app
        self.log = logging.getLogger(ACCESS_LOG)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        status = 500  # what the server answers when the app fails before it starts a response

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            elapsed = (time.time() - started) * 1000
            self.log.info(
                f'{iso_time(started)} {client[0] if client else "-"} "{scope["method"]} {target}" '
                f"{status} {elapsed:.1f}ms"
            )


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

    # Plain ASGI middleware rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs
    # every request through an extra task group and a streamed copy of the response, which made a small
    # GET cost about 1.6 ms of the server's CPU (measured; see docs/benchmarks.md), CPU that the scans
    # running beside it need.  Starlette wraps later additions around earlier ones, so the access log
    # sees everything, the 413 below included.
    app.add_middleware(_RefuseLargeBodies, max_upload_bytes=max_upload_bytes)
    app.add_middleware(_AccessLog)

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

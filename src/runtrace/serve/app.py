"""The FastAPI application: the API under /api/v1, the page at /, OpenAPI docs at /docs."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

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
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from the package
        redoc_url=None,
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

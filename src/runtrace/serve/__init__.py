"""`runtrace serve`: a scanning service with a web page.  See docs/serve.md.

Modules: `store` (jobs in SQLite, samples on disk by sha256), `uploads` (what an upload holds; zip bombs
refused), `jobs` (the worker pool running each scan as `runtrace scan --json`), `api` (the HTTP API),
`app` (the FastAPI application), `static/` (the page: html, js and css, served locally).
"""

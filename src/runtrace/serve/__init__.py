"""`runtrace serve`: a scanning service with a web page.  See docs/serve.md.

Modules: `store` (scans and batches in SQLite, samples on disk by sha256), `uploads` (what an upload
holds; zip bombs refused), `jobs` (the worker pool, scanning with the `Scanner` `runtrace scan` uses, in
this process; tracing in forked children), `api` (the HTTP API), `app` (the FastAPI application, the
access log, one-line errors), `process` (the server as a child process, for tests and benchmarks),
`static/` (the page: html, js and css, served locally).
"""

"""`runtrace serve`'s API through FastAPI's TestClient: scans, reuse, deletion, restarts, bad uploads."""

from __future__ import annotations

import hashlib
import io
import json
import random
import string
import subprocess
import sys
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from runtrace.cli.app import app as cli_app
from runtrace.scan.schema import SCHEMA_VERSION, FileResult
from runtrace.serve.app import create_app
from scan_support import encrypted_zip
from serve_support import make_service, wait_for


@pytest.fixture
def service(tmp_path):
    return make_service(tmp_path / "state")


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def upload(client, name: str, data: bytes, **form) -> tuple[int, dict]:
    response = client.post("/api/v1/scans", files={"file": (name, data)}, data=form)
    return response.status_code, response.json()


def _comparable(result: dict) -> dict:
    """A result without what differs between two runs of the same scan: timings and the name."""
    out = json.loads(json.dumps(result))
    out.pop("timing")
    out.pop("name")
    out["trace"].pop("emulation_s")
    return out


def test_scan_record_is_the_cli_record(client, cli32):
    code, body = upload(client, "cli-32.exe", cli32.read_bytes())
    assert code == 202 and body["status"] in ("queued", "running") and body["ids"] == [body["id"]]
    scan = wait_for(client, body["id"])
    assert scan["status"] == "done", scan
    result = scan["result"]
    FileResult.model_validate(result)  # the schema's own validation: no field more, none less
    assert result["schema_version"] == SCHEMA_VERSION and result["name"] == "cli-32.exe"
    assert result["verdict"] in ("benign", "malicious", "unknown") and 0.0 <= result["probability"] <= 1.0
    assert len(result["trace"]["window_probabilities"]) == result["trace"]["windows"]

    cli = subprocess.run(
        [sys.executable, "-m", "runtrace", "scan", "--json", "--max-instructions", "200000",
         "--timeout", "30", str(cli32)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert _comparable(json.loads(cli.stdout)["results"][0]) == _comparable(result)


def test_waiting_for_a_scan_is_answered_as_soon_as_it_finishes(client, cli32):
    _, body = upload(client, "cli-32.exe", cli32.read_bytes())
    scan = client.get(f"/api/v1/scans/{body['id']}", params={"wait": 30}).json()  # one request
    assert scan["status"] == "done" and scan["result"]["name"] == "cli-32.exe"
    finished = datetime.fromisoformat(scan["finished"].replace("Z", "+00:00")).timestamp()
    assert time.time() - finished < 5  # answered when it finished, not when the wait ran out


def test_a_wait_ends_with_the_scan_as_it_is_or_404_when_it_is_deleted(tmp_path, cli32):
    service = make_service(tmp_path / "state")
    client = TestClient(create_app(service))  # no `with`: the workers do not start, the scan stays queued
    _, body = upload(client, "cli-32.exe", cli32.read_bytes())
    url = f"/api/v1/scans/{body['id']}"
    started = time.monotonic()
    assert client.get(url, params={"wait": 0.5}).json()["status"] == "queued"
    assert 0.5 <= time.monotonic() - started < 10
    threading.Timer(0.3, service.delete, (body["id"],)).start()
    started = time.monotonic()
    assert client.get(url, params={"wait": 30}).status_code == 404
    assert time.monotonic() - started < 10
    assert not service._watchers  # every waiter stopped watching
    assert client.get(url, params={"wait": 31}).status_code == 422  # longer than the API allows


def test_same_bytes_reuse_the_result_and_are_found_by_sha256(client, cli32):
    _, first = upload(client, "a.exe", cli32.read_bytes())
    done = wait_for(client, first["id"])
    code, second = upload(client, "copy.exe", cli32.read_bytes())
    assert code == 202 and second["status"] == "done"  # answered at once, no second emulation
    again = client.get(f"/api/v1/scans/{second['id']}").json()
    assert again["result"]["name"] == "copy.exe"
    assert again["result"]["probability"] == done["result"]["probability"]
    sha = done["result"]["sha256"]
    found = client.get("/api/v1/scans", params={"sha256": sha}).json()["scans"]
    assert {s["id"] for s in found} == {first["id"], second["id"]}
    assert client.get("/api/v1/scans", params={"sha256": "0" * 64}).json()["scans"] == []


def test_delete_forgets_the_scan_and_its_sample(client, service, cli64):
    _, body = upload(client, "cli-64.exe", cli64.read_bytes())
    scan = wait_for(client, body["id"])
    sample = service.samples.path(scan["sha256"])
    assert sample.exists() and not sample.stat().st_mode & 0o111  # stored, never executable
    assert client.delete(f"/api/v1/scans/{body['id']}").json() == {"id": body["id"], "deleted": True}
    assert client.get(f"/api/v1/scans/{body['id']}").status_code == 404
    assert client.delete(f"/api/v1/scans/{body['id']}").status_code == 404
    assert not sample.exists()


def test_queued_and_interrupted_jobs_run_after_a_restart(tmp_path, cli32, cli64):
    state = tmp_path / "state"
    before = make_service(state)  # never started: its jobs stay queued, as when a server stops
    first = before.submit(hashlib.sha256(cli32.read_bytes()).hexdigest(), "cli-32.exe", cli32.read_bytes())
    second = before.submit(hashlib.sha256(cli64.read_bytes()).hexdigest(), "cli-64.exe", cli64.read_bytes())
    assert before.jobs.claim().id == first.id  # as if a worker had started it when the server stopped
    before.jobs.close()

    with TestClient(create_app(make_service(state))) as client:
        for job in (first, second):
            assert wait_for(client, job.id)["status"] == "done"
    # ...and the results are still there after another restart.
    with TestClient(create_app(make_service(state))) as client:
        assert client.get(f"/api/v1/scans/{first.id}").json()["result"]["name"] == "cli-32.exe"
        assert client.get("/api/v1/health").json()["scans"] == {"done": 2}


def test_a_file_the_tracer_rejects_is_an_error_result(client):
    _, body = upload(client, "notes.txt", b"just some text, not a program\n" * 10)
    scan = wait_for(client, body["id"])
    assert scan["status"] == "error"
    assert scan["result"]["status"] == "error" and scan["result"]["reason"]
    FileResult.model_validate(scan["result"])


def test_zip_archives_give_one_scan_per_member(client, cli32, cli64, tmp_path):
    archive = encrypted_zip(
        tmp_path / "s.zip", {"a.exe": cli32.read_bytes(), "b.exe": cli64.read_bytes()}, b"infected"
    )
    code, body = upload(client, "s.zip", archive.read_bytes(), password="infected")
    assert code == 202 and len(body["ids"]) == 2 and body["id"] == body["ids"][0]
    names = {wait_for(client, i)["result"]["name"] for i in body["ids"]}
    assert names == {"s.zip:a.exe", "s.zip:b.exe"}


def test_bad_uploads_get_one_line_errors(client, tmp_path, cli32):
    code, body = upload(client, "empty.exe", b"")
    assert code == 400 and body["detail"] == "empty.exe: empty upload"

    archive = encrypted_zip(tmp_path / "s.zip", {"a.exe": cli32.read_bytes()}, b"infected")
    code, body = upload(client, "s.zip", archive.read_bytes(), password="wrong")
    assert code == 400 and "wrong or missing password" in body["detail"]
    code, body = upload(client, "s.zip", archive.read_bytes())
    assert code == 400 and "password" in body["detail"]

    code, body = upload(client, "broken.zip", b"PK\x03\x04" + b"\0" * 100)
    assert code == 400 and "unreadable zip" in body["detail"]

    response = client.post("/api/v1/scans", data={"password": "x"})  # no file field
    assert response.status_code == 422 and response.json() == {"detail": "file: Field required"}
    response = client.get("/api/v1/scans", params={"limit": "many"})
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    assert "\n" not in response.json()["detail"] and response.json()["detail"].startswith("limit: ")
    assert client.get("/api/v1/scans/no-such-id").json() == {"detail": "no scan no-such-id"}


def test_zip_bombs_and_oversized_uploads_are_refused(tmp_path):
    service = make_service(tmp_path / "state")
    limit = 4 * 1024 * 1024
    with TestClient(create_app(service, max_upload_bytes=limit)) as client:
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("zeros.exe", b"\0" * (3 * 1024 * 1024))  # 3 MiB in a few KiB
        code, body = upload(client, "bomb.zip", bomb.getvalue())
        assert code == 413 and "compression ratio" in body["detail"]

        # Members that compress only ~1.7:1 (random letters) but unpack past the limit together.
        rng = random.Random(0)
        letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(1_500_000)).encode()
        many = io.BytesIO()
        with zipfile.ZipFile(many, "w", zipfile.ZIP_DEFLATED) as z:
            for k in range(3):
                z.writestr(f"part{k}.bin", letters)
        assert len(many.getvalue()) < limit
        code, body = upload(client, "many.zip", many.getvalue())
        assert code == 413 and "over the limit" in body["detail"]

        code, body = upload(client, "huge.exe", b"MZ" + b"\1" * limit)
        assert code == 413 and "upload limit" in body["detail"]
    assert service.jobs.counts() == {}  # nothing was queued


def test_a_token_is_required_when_configured(tmp_path):
    with TestClient(create_app(make_service(tmp_path / "state"), token="s3cret")) as client:
        assert client.get("/api/v1/health").status_code == 401
        assert client.get("/api/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/v1/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/api/v1/scans", headers={"X-Runtrace-Token": "s3cret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself asks for the token


def test_model_health_page_and_openapi(client):
    model = client.get("/api/v1/model").json()
    assert model["model"]["weights_sha256"] and 0.0 <= model["decision"]["threshold"] <= 1.0
    assert client.get("/api/v1/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert "http" not in page.text.split("<body>")[1].replace("http://www.w3.org", "")  # nothing remote
    assert (
        client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200
    )
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/scans", "/api/v1/scans/{key}", "/api/v1/scans/{key}/trace", "/api/v1/batches/{batch_id}",
            "/api/v1/health", "/api/v1/model"} <= set(paths)  # fmt: skip
    # Every route says what it answers (response_model): the description has a schema for each.
    for route in ("/api/v1/scans/{key}", "/api/v1/batches/{batch_id}", "/api/v1/health"):
        assert "$ref" in json.dumps(paths[route]["get"]["responses"]["200"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # Swagger UI comes from the package, not a CDN
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_serve_refuses_to_listen_off_localhost_without_a_token(monkeypatch):
    monkeypatch.delenv("RUNTRACE_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "needs an API token" in result.output


def test_a_sample_stays_while_any_scan_refers_to_it(tmp_path, cli32):
    service = make_service(tmp_path / "state")  # not started: the jobs stay queued
    data = cli32.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    first, second = service.submit(sha, "a.exe", data), service.submit(sha, "b.exe", data)
    service.delete(first.id)
    assert service.samples.path(sha).exists() and service.jobs.get(first.id) is None
    service.delete(second.id)
    assert not service.samples.path(sha).exists() and service.jobs.counts() == {}


def test_an_uploaded_trace_is_scanned_as_a_trace(client, tmp_path):
    from scan_support import write_traces

    trace = write_traces(tmp_path, {"evil": (True, 701, {})})["evil"]
    code, body = upload(client, "evil.rtrace", trace.read_bytes())
    assert code == 202 and len(body["ids"]) == 1  # a trace is a zip, but not an archive of samples
    result = wait_for(client, body["id"])["result"]
    assert result["status"] == "ok" and result["input_kind"] == "trace" and result["name"] == "evil.rtrace"


def test_deleting_a_running_scan_stops_its_tracer_child(tmp_path, cli32, monkeypatch):
    """Scans are scored in the server, but each sample is still emulated in a forked tracer child; a
    scan deleted while it runs has that child killed at once, and the worker takes the next job."""

    import psutil

    import runtrace.trace.emulate.batch as batch

    def children() -> list:  # the tracer children are plain forks (trace/emulate/forked.py)
        return [c for c in psutil.Process().children() if c.status() != psutil.STATUS_ZOMBIE]

    # The child is forked from this process, so it runs the patched, endless emulation.
    monkeypatch.setattr(batch, "emulate", lambda *args, **kwargs: time.sleep(600))
    service = make_service(tmp_path / "state")
    with TestClient(create_app(service)) as client:
        _, body = upload(client, "endless.exe", cli32.read_bytes())
        deadline = time.monotonic() + 30
        while not children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children(), "the tracer child never started"
        assert client.get(f"/api/v1/scans/{body['id']}").json()["status"] == "running"
        stopped = time.monotonic()
        assert client.delete(f"/api/v1/scans/{body['id']}").status_code == 200
        while (service._running or children()) and time.monotonic() < stopped + 20:
            time.sleep(0.05)
        assert not service._running and not children()
        assert time.monotonic() - stopped < 5
        assert client.get(f"/api/v1/scans/{body['id']}").status_code == 404


def test_an_archive_upload_is_a_batch_done_only_when_every_member_is(tmp_path, cli32, cli64):
    """The issue's case: the first member was scanned before (answered at once), the others are queued;
    the upload must not answer `done`."""
    service = make_service(tmp_path / "state")  # not started: new scans stay queued
    data = cli32.read_bytes()
    service.jobs.add(hashlib.sha256(data).hexdigest(), "earlier.exe", service.model_key,
                     {"status": "ok", "verdict": "benign", "name": "earlier.exe"})  # fmt: skip
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.exe", data)
        z.writestr("b.exe", cli64.read_bytes())
        z.writestr("c.exe", cli64.read_bytes() + b"\0")
    client = TestClient(create_app(service))  # no `with`: the workers do not start
    code, body = upload(client, "three.zip", archive.getvalue())
    assert code == 202 and body["status"] == "running" and len(body["ids"]) == 3
    assert body["counts"] == {"queued": 2, "running": 0, "done": 1, "error": 0}
    assert [(s["name"], s["status"]) for s in body["scans"]] == [
        ("three.zip:a.exe", "done"),
        ("three.zip:b.exe", "queued"),
        ("three.zip:c.exe", "queued"),
    ]
    batch = client.get(f"/api/v1/batches/{body['batch']}").json()
    assert batch["status"] == "running" and batch["name"] == "three.zip" and batch["scans"] == body["scans"]
    assert client.get(f"/api/v1/scans/{body['ids'][1]}").json()["batch"] == body["batch"]
    assert client.get("/api/v1/batches/nope").status_code == 404
    with TestClient(create_app(service)) as running:
        for scan_id in body["ids"]:
            wait_for(running, scan_id)
        batch = running.get(f"/api/v1/batches/{body['batch']}").json()
    assert batch["status"] == "done" and batch["counts"]["done"] == 3
    assert all(s["verdict"] in ("benign", "malicious", "unknown") for s in batch["scans"])


def test_a_scan_is_found_by_sha256_and_its_trace_downloaded(client, cli32, tmp_path):
    from runtrace.trace.formats.registry import load_any

    _, body = upload(client, "cli-32.exe", cli32.read_bytes())
    scan = wait_for(client, body["id"])
    sha = hashlib.sha256(cli32.read_bytes()).hexdigest()
    assert client.get(f"/api/v1/scans/{sha}").json()["id"] == body["id"]
    assert client.get(f"/api/v1/scans/{sha.upper()}").json()["id"] == body["id"]
    assert client.get(f"/api/v1/scans/{'0' * 64}").status_code == 404
    # ISO 8601 times in UTC.
    from datetime import datetime

    for key in ("created", "started", "finished"):
        assert scan[key].endswith("Z") and datetime.fromisoformat(scan[key]).tzinfo is not None

    instructions = scan["result"]["trace"]["instructions"]
    for fmt, suffix in (("native", ".rtrace"), ("x64dbg", ".trace32"), ("text", ".txt")):
        response = client.get(f"/api/v1/scans/{sha}/trace", params={"format": fmt})
        assert response.status_code == 200, response.text
        assert f'filename="{sha}{suffix}"' in response.headers["content-disposition"]
        path = tmp_path / f"download{suffix}"
        path.write_bytes(response.content)
        trace = load_any(path)
        assert trace.instruction_count == instructions
        if fmt != "x64dbg":  # x64dbg files hold no API calls; the others keep them and the sha256
            assert trace.meta.sha256 == sha and len(trace.api_calls) == scan["result"]["trace"]["api_calls"]
    response = client.get(f"/api/v1/scans/{sha}/trace", params={"format": "pdf"})
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)


def test_an_uploaded_trace_is_downloaded_and_a_failed_scan_has_none(client, tmp_path):
    from scan_support import write_traces

    trace = write_traces(tmp_path, {"evil": (True, 701, {})})["evil"]
    _, body = upload(client, "evil.rtrace", trace.read_bytes())
    wait_for(client, body["id"])
    response = client.get(f"/api/v1/scans/{body['id']}/trace")
    assert response.status_code == 200 and response.content[:2] == b"PK"
    assert client.get(f"/api/v1/scans/{body['id']}/trace", params={"format": "text"}).status_code == 200
    _, body = upload(client, "notes.bin", b"not a program\n")
    wait_for(client, body["id"])
    response = client.get(f"/api/v1/scans/{body['id']}/trace")
    assert response.status_code == 404 and response.json()["detail"].endswith("has no trace (error)")


def test_the_same_bad_input_gets_the_same_message_from_cli_and_server(client, tmp_path, cli32):
    """A text file named notes.txt, and a PE cut to 3,000 bytes: `runtrace scan` and the service say the
    same words about the same file (where the command line names the path given, the service names the
    upload)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("remember to buy milk\nand bread\n")
    cut = tmp_path / "cut.exe"
    cut.write_bytes(cli32.read_bytes()[:3000])
    cli = CliRunner().invoke(cli_app, ["scan", "--json", str(notes), str(cut)])
    by_cli = {Path(r["name"]).name: r["reason"] for r in json.loads(cli.stdout)["results"]}
    assert by_cli["cut.exe"] == (
        "truncated PE: section .text needs bytes 1,024 to 6,656, past the end of the file (3,000 bytes)"
    )
    for path in (notes, cut):
        _, body = upload(client, path.name, path.read_bytes())
        scan = wait_for(client, body["id"])
        assert scan["status"] == "error"
        assert scan["result"]["reason"] == by_cli[path.name].replace(str(path), path.name)


def test_every_request_is_one_line_of_the_access_log(tmp_path, cli32):
    import re

    from runtrace.serve.app import access_logger

    log = tmp_path / "access.log"
    access_logger(log)
    try:
        with TestClient(create_app(make_service(tmp_path / "state"), token="s3cret")) as client:
            client.get("/api/v1/health", headers={"Authorization": "Bearer s3cret"})
            client.get("/api/v1/scans?limit=5", headers={"Authorization": "Bearer s3cret"})
            client.get("/api/v1/health")
    finally:
        access_logger(None)
    lines = log.read_text().splitlines()
    pattern = r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ "GET /api/v1/\S+" \d{3} \d+\.\dms'
    assert len(lines) == 3 and all(re.fullmatch(pattern, line) for line in lines), lines
    assert '"GET /api/v1/scans?limit=5" 200' in lines[1] and lines[2].split('" ')[1].startswith("401")
    assert "s3cret" not in log.read_text()


def test_a_request_the_service_fails_on_is_logged_with_500(tmp_path, monkeypatch):
    from runtrace.serve.app import access_logger

    log = tmp_path / "access.log"
    access_logger(log)
    service = make_service(tmp_path / "state")
    monkeypatch.setattr(service, "model_description", lambda: 1 / 0)
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as client:
            assert client.get("/api/v1/model").status_code == 500
    finally:
        access_logger(None)
    (line,) = log.read_text().splitlines()
    assert '"GET /api/v1/model" 500 ' in line


def test_a_database_from_before_batches_opens_and_keeps_its_scans(tmp_path):
    import sqlite3

    from runtrace.serve.store import JobStore

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        old.execute("CREATE TABLE scans (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL, "
                    "status TEXT NOT NULL, model_key TEXT NOT NULL, created REAL NOT NULL, started REAL, "
                    "finished REAL, result TEXT)")  # fmt: skip
        old.execute("INSERT INTO scans VALUES ('x', 'ab', 'a.exe', 'done', 'k', 1.5, 1.5, 2.0, '{}')")
    job = JobStore(db).get("x")
    assert job.batch is None and job.public()["created"] == "1970-01-01T00:00:01.500Z"

"""`runtrace serve`'s API through FastAPI's TestClient: scans, reuse, deletion, restarts, bad uploads."""

from __future__ import annotations

import hashlib
import io
import json
import random
import string
import subprocess
import sys
import zipfile

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
    assert code == 202 and body["status"] == "queued" and body["ids"] == [body["id"]]
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

    assert client.post("/api/v1/scans", data={"password": "x"}).status_code == 422  # no file field
    assert client.get("/api/v1/scans/no-such-id").status_code == 404


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
    assert {"/api/v1/scans", "/api/v1/scans/{scan_id}", "/api/v1/health", "/api/v1/model"} <= set(paths)
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
    import time

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

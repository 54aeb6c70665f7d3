"""The batch engine embedded in the gateway (``make demo``'s default: in-memory Celery
transport, SQLite), through its HTTP API and the CLI, against the real Triton server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile

import httpx
import pytest

from batch.local_workers import wait_for
from batch.store import JobStore
from pcb.synthetic import render_board
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, encode
from tests.gateway_server import GatewayServer


@pytest.fixture(scope="module")
def boards():
    return [encode(render_board(900 + i).image) for i in range(12)]


@pytest.fixture
def env(triton, tmp_path):
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}", "TRITON_URL": triton.grpc_url,
            "BATCH_BROKER_URL": "memory://", "BATCH_DATA_DIR": str(tmp_path / "data"),
            "BATCH_ALLOWED_ROOTS": str(tmp_path / "allowed"), "OUTBOX_PATH": str(tmp_path / "outbox.db"),
            "IMAGE_DIR": str(tmp_path / "images"), "ENHANCE_DIR": str(tmp_path / "enhance"),
            "BATCH_CHUNK_SIZE": "2", "BATCH_CONCURRENCY": "1", "BATCH_MAX_UPLOAD_BYTES": str(50 << 20),
            "AUTH_MODE": "off"}  # the batch API's behaviour; its access rules: tests/test_security.py


@pytest.fixture
def gateway(env, tmp_path):
    gw = GatewayServer(env, tmp_path / "gateway.log").start()
    try:
        yield gw
    finally:
        gw.stop()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _wait_done(gw, job_id, timeout=90):
    return wait_for(lambda: (p := httpx.get(f"{gw.url}/api/v1/jobs/{job_id}").json())["state"] != "running" and p,
                    timeout, 0.2, f"job {job_id}")


def test_upload_job_progress_events_and_results(gateway, boards):
    files = [("files", (f"b{i}.jpg", b, "image/jpeg")) for i, b in enumerate(boards[:4])]
    files.append(("files", ("more.zip", _zip({"z/1.jpg": boards[4], "z/2.jpg": boards[5], "z/bad.jpg": b"nope"}),
                            "application/zip")))
    r = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, data={"priority": "high", "name": "re-check"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["total"] == 7 and job["priority"] == 2 and job["name"] == "re-check"

    events = []
    with httpx.stream("GET", f"{gateway.url}/api/v1/jobs/{job['job_id']}/events", timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
            if line.startswith("data: ") and events[-1] == "done":
                final = json.loads(line[6:])
                break
    assert events[0] == "progress" and events[-1] == "done"
    assert final["counts"]["completed"] == 6 and final["counts"]["failed"] == 1 and final["eta_s"] == 0.0
    assert final["items_per_s"] > 0

    jid = job["job_id"]
    failed = httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/items", params={"state": "failed"}).json()
    assert [i["name"] for i in failed] == ["more/z/bad.jpg"] and failed[0]["error"].startswith("unsupported_image")
    body = httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/results").json()
    assert len(body["items"]) == 7 and body["summary"]["items"] == 7
    assert all(i["result"]["verdict"] for i in body["items"] if i["state"] == "completed")
    rows = list(csv.DictReader(io.StringIO(httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/results?format=csv").text)))
    assert len(rows) == 7 and {r["state"] for r in rows} == {"completed", "failed"}
    summary = httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/results?format=summary").json()
    assert sum(summary["verdicts"].values()) == 6
    report = httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/results?format=report")
    assert report.headers["content-type"].startswith("text/html") and "<svg" in report.text
    assert any(j["job_id"] == jid for j in httpx.get(f"{gateway.url}/api/v1/jobs").json())
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'batch_items{state="completed"} 6.0' in metrics and 'batch_jobs{state="completed"} 1.0' in metrics


def test_bad_requests_get_clear_errors_and_leave_nothing(gateway, env, tmp_path, boards):
    url = f"{gateway.url}/api/v1/jobs"
    r = httpx.post(url, data={"priority": "high"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = httpx.post(url, data={"source_dir": "/etc"})
    assert r.status_code == 400 and r.json()["code"] == "source_not_allowed"
    r = httpx.post(url, files=[("files", ("a.jpg", boards[0], "image/jpeg"))], data={"priority": "asap"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    bomb = _zip({"big.jpg": b"\0" * 100_000_000})
    r = httpx.post(url, files=[("files", ("bomb.zip", bomb, "application/zip"))], timeout=60)
    assert r.status_code == 413 and r.json()["code"] == "archive_too_large"
    r = httpx.post(url, files=[("files", ("e.zip", _zip({"readme.txt": b"x"}), "application/zip"))])
    assert r.status_code == 201  # non-images in a ZIP are items that fail visibly, not a refusal
    assert not [p for p in (tmp_path / "data").iterdir() if not (tmp_path / "data" / r.json()["job_id"]) == p]
    for path in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/results", "/api/v1/jobs/nope/events"):
        r = httpx.get(gateway.url + path)
        assert r.status_code == 404 and r.json()["code"] == "job_not_found", path
    assert httpx.post(f"{gateway.url}/api/v1/jobs/nope/cancel").status_code == 404


def test_source_dir_cancel_item_and_restart_resume(gateway, env, tmp_path, boards):
    allowed = tmp_path / "allowed" / "lot7"
    allowed.mkdir(parents=True)
    for i in range(60):
        (allowed / f"{i:03d}.jpg").write_bytes(boards[i % len(boards)])
    r = httpx.post(f"{gateway.url}/api/v1/jobs", data={"source_dir": str(allowed), "priority": "low"})
    assert r.status_code == 201
    jid = r.json()["job_id"]
    last = httpx.get(f"{gateway.url}/api/v1/jobs/{jid}/items", params={"state": "pending", "offset": 50}).json()[-1]
    r = httpx.post(f"{gateway.url}/api/v1/jobs/{jid}/items/{last['id']}/cancel")
    assert r.status_code == 200 and r.json()["counts"]["cancelled"] == 1
    store = JobStore(make_sessionmaker(make_engine(env["DATABASE_URL"])))
    wait_for(lambda: store.progress(jid)["counts"]["completed"] >= 6, 60, 0.05, "some progress")
    os.killpg(gateway.proc.pid, 9)  # the whole gateway, embedded worker and in-memory queue with it
    gateway.proc.wait(10)
    mid = store.progress(jid)
    assert mid["state"] == "running" and mid["counts"]["completed"] < 59
    gateway.start()  # resumes: chunks that were in flight are requeued at start
    p = _wait_done(gateway, jid)
    assert p["counts"] == {"pending": 0, "processing": 0, "completed": 59, "failed": 0, "cancelled": 1}


def test_cli_run_shows_progress_and_writes_results(env, tmp_path, boards):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, b in enumerate(boards[:8]):
        (folder / f"{i}.jpg").write_bytes(b)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "batch", "run", str(folder), "--priority", "high",
                        "--out", str(out)], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "img" in p.stderr and "9/9" in p.stderr  # the tqdm bar
    final = json.loads(p.stdout.strip().splitlines()[-1])
    assert final["state"] == "completed" and final["counts"]["completed"] == 8 and final["counts"]["failed"] == 1
    assert sorted(f.name for f in out.iterdir()) == ["report.html", "results.csv", "results.json", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["items"] == 9
    listed = subprocess.run([sys.executable, "-m", "batch", "list"], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert '"state": "completed"' in listed.stdout


def test_cli_tune_records_the_pick(env):
    p = subprocess.run([sys.executable, "-m", "batch", "tune", "--items", "16"], cwd=ROOT,
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    pick = json.loads(p.stdout.strip().splitlines()[-1])
    assert pick["items_per_s"] > 0 and "<- best" in p.stdout
    store = JobStore(make_sessionmaker(make_engine(env["DATABASE_URL"])))
    from batch.tuning import current
    from settings.environment import Settings

    assert current(store.sessions, Settings()) == (pick["batch_size"], pick["concurrency"])
    assert store.jobs() == []  # the probe jobs measured the worker's path and were deleted


def test_dead_database_is_503_and_the_upload_is_not_kept(env, mariadb, tmp_path, boards):
    proxy, url = mariadb
    gw = GatewayServer({**env, "DATABASE_URL": url}, tmp_path / "gw-db.log").start()
    try:
        proxy.cut()
        r = httpx.get(f"{gw.url}/api/v1/jobs", timeout=30)
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable" and "Retry-After" in r.headers
        r = httpx.post(f"{gw.url}/api/v1/jobs", files=[("files", ("a.jpg", boards[0], "image/jpeg"))], timeout=30)
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
        assert not any((tmp_path / "data").glob("*/*"))  # the refused upload was removed
        proxy.restore()
        r = httpx.post(f"{gw.url}/api/v1/jobs", files=[("files", ("a.jpg", boards[0], "image/jpeg"))], timeout=30)
        assert r.status_code == 201
        assert _wait_done(gw, r.json()["job_id"])["counts"]["completed"] == 1
    finally:
        gw.stop()


def test_enhancement_job_through_the_engine(enhance_triton, tmp_path):
    """The same engine runs photo-enhancement batches: ``--kind enhance`` calls the
    ``face_enhance`` pipeline and writes each result under the job's out/ folder."""
    from enhance.synthetic import face_photo

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(encode(face_photo(40 + i, faces=1)[0]))
    (folder / "wall.png").write_bytes(encode(face_photo(50, faces=0)[0], ".png"))
    (folder / "junk.jpg").write_bytes(b"\xff\xd8 truncated")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}", "TRITON_URL": enhance_triton.grpc_url,
           "BATCH_BROKER_URL": "memory://", "BATCH_DATA_DIR": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-m", "batch", "run", str(folder), "--kind", "enhance",
                        "--out", str(tmp_path / "res")], cwd=ROOT, env={**os.environ, **env},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    items = {i["name"]: i for i in json.loads((tmp_path / "res" / "results.json").read_text())["items"]}
    assert items["junk.jpg"]["state"] == "failed" and items["junk.jpg"]["error"].startswith("invalid_image")
    assert items["wall.png"]["result"]["no_face"] is True
    for name in ("p0.jpg", "p1.jpg", "p2.jpg", "wall.png"):
        out = items[name]["result"]["output"]
        assert out.endswith(name) and os.path.getsize(out) > 1000
    assert sum(items[f"p{i}.jpg"]["result"]["faces"] for i in range(3)) >= 2  # Haar on drawn faces


def test_idempotency_key_makes_a_retried_submission_find_its_job(gateway, boards):
    files = [("files", ("a.jpg", boards[0], "image/jpeg")), ("files", ("b.jpg", boards[1], "image/jpeg"))]
    key = {"Idempotency-Key": "lot-77-upload-1"}
    first = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, headers=key, timeout=30)
    again = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, headers=key, timeout=30)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert len(httpx.get(f"{gateway.url}/api/v1/jobs").json()) == 1
    other = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, headers={"Idempotency-Key": "lot-77-upload-2"})
    assert other.status_code == 201 and other.json()["job_id"] != first.json()["job_id"]
    # the same key with other content (one file changed, or another priority) is refused
    changed = [files[0], ("files", ("b.jpg", boards[2], "image/jpeg"))]
    for kw in ({"files": changed}, {"files": files, "data": {"priority": "urgent"}}):
        r = httpx.post(f"{gateway.url}/api/v1/jobs", headers=key, timeout=30, **kw)
        assert r.status_code == 409 and r.json()["code"] == "idempotency_conflict", r.text
    assert len(httpx.get(f"{gateway.url}/api/v1/jobs").json()) == 2

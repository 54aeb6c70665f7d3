"""The enhancement API end to end: a real gateway (uvicorn) in front of a real Triton serving
face_enhance with the narrow random-init networks. One photo, a 20-photo batch with its
progress stream and ZIP, cancel, performance, and every bad input refused with a clear 4xx."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import time
import zipfile
import zlib

import cv2
import httpx
import numpy as np
import pytest

from enhance.synthetic import face_photo
from tests.conftest import encode
from tests.gateway_server import GatewayServer

MAX_UPLOAD = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def gateway(enhance_triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("enhance_gw")
    srv = GatewayServer({"TRITON_URL": enhance_triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"),
                         "ENHANCE_DIR": str(d / "enhance"), "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                         "AUTH_MODE": "off"},  # access rules: tests/test_security.py
                        d / "gateway.log").start()
    srv.enhance_dir = d / "enhance"
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def photo(seed: int, faces: int = 1, ext: str = ".jpg") -> bytes:
    img, _ = face_photo(seed, (320, 240), faces, (70, 100)) if faces else (face_photo(seed, (320, 240), 0)[0], [])
    return encode(img, ext)


def wait_task(c: httpx.Client, tid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = c.get(f"/api/v1/tasks/{tid}").json()
        if t["state"] in ("completed", "failed", "cancelled"):
            return t
        time.sleep(0.1)
    raise TimeoutError(tid)


def files_in(gateway) -> list:
    return [p for p in gateway.enhance_dir.rglob("*") if p.is_file()]


def test_one_photo(client):
    r = client.post("/api/v1/enhance", files={"file": ("me.jpg", photo(1, faces=2), "image/jpeg")},
                    data={"quality": "medium", "upscale": "2"})
    assert r.status_code == 202, r.text
    t = wait_task(client, r.json()["task_id"])
    assert t["state"] == "completed", t
    assert t["faces"] == 2 and t["info"]["background_upsampled"] is True
    d = client.get(f"/api/v1/download/{t['task_id']}")
    assert d.status_code == 200 and d.headers["content-type"] == "image/jpeg"
    assert "enhanced_00_me.jpg" in d.headers["content-disposition"]
    out = cv2.imdecode(np.frombuffer(d.content, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (480, 640, 3)


def test_photo_without_a_face_is_background_only(client):
    r = client.post("/api/v1/enhance", files={"file": ("wall.png", photo(2, faces=0, ext=".png"), "image/png")},
                    data={"quality": "fast"})
    t = wait_task(client, r.json()["task_id"])
    assert t["state"] == "completed" and t["faces"] == 0 and t["info"]["no_face"] is True
    d = client.get(f"/api/v1/download/{t['task_id']}")
    assert d.headers["content-type"] == "image/png" and d.content[:4] == b"\x89PNG"


def test_batch_of_20_with_progress_stream_and_zip(client, gateway, tmp_path):
    files = [("files", (f"p{i}.{'png' if i % 4 == 0 else 'jpg'}", photo(100 + i, faces=i % 3,
                                                                        ext=".png" if i % 4 == 0 else ".jpg"),
                        "image/png" if i % 4 == 0 else "image/jpeg")) for i in range(20)]
    r = client.post("/api/v1/enhance/batch", files=files, data={"quality": "high", "tile_size": "256"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["total"] == 20 and body["options"]["tile"] == 256
    events, done = [], None
    with client.stream("GET", body["events_url"], timeout=120) as s:
        kind = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                events.append((kind, data))
                if kind == "done":
                    done = data
                    break
    assert done and done["completed"] == 20 and done["progress"] == 1.0, done
    completed = {d["index"] for k, d in events if k == "item" and d["state"] == "completed"}
    assert completed == set(range(20))  # every photo announced as it finished
    st = client.get(body["status_url"]).json()
    assert st["state"] == "completed" and [it["faces"] for it in st["items"]] == [i % 3 for i in range(20)]
    z = client.get(body["download_url"])
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    # streamed as it is written: no length known in advance, no copy on disk
    assert "content-length" not in z.headers and z.headers["transfer-encoding"] == "chunked"
    archive = tmp_path / "batch.zip"
    archive.write_bytes(z.content)
    if shutil.which("unzip"):  # Info-ZIP reads the data descriptors too, not only Python
        subprocess.run(["unzip", "-tq", str(archive)], check=True, capture_output=True)
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == 21 and "manifest.json" in names
        manifest = json.loads(zf.read("manifest.json"))
        assert [m["state"] for m in manifest["items"]] == ["completed"] * 20
        for m in manifest["items"]:
            img = cv2.imdecode(np.frombuffer(zf.read(m["file"]), np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (480, 640, 3)
    assert not [p for p in files_in(gateway) if p.suffix in (".zip", ".partial")]  # the ZIP is not kept


def test_cancel_a_batch(client):
    files = [("files", (f"c{i}.jpg", photo(200 + i), "image/jpeg")) for i in range(12)]
    body = client.post("/api/v1/enhance/batch", files=files, data={"quality": "high"}).json()
    c = client.post(f"/api/v1/batch/{body['batch_id']}/cancel").json()
    assert c["cancelled"] >= 1
    deadline = time.monotonic() + 60
    while (st := client.get(body["status_url"]).json())["state"] not in ("completed", "finished"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert st["cancelled"] >= 1 and st["cancelled"] + st["completed"] == 12
    item = next(it for it in st["items"] if it["state"] == "cancelled")
    r = client.get(f"/api/v1/download/{item['task_id']}")
    assert r.status_code == 409 and r.json()["code"] == "not_ready"


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("files,data,status,code", [
    ([("files", ("a.txt", b"hello, not a photo", "text/plain"))], {}, 415, "unsupported_media_type"),
    ([("files", ("a.jpg", b"hello, not a photo", "image/jpeg"))], {}, 415, "unsupported_image"),
    ([("files", ("bomb.png", _png_header(50_000, 50_000) + b"\0" * 64, "image/png"))], {}, 422, "image_too_large"),
    ([("files", ("big.jpg", b"\xff\xd8" + b"\0" * (MAX_UPLOAD + 10), "image/jpeg"))], {}, 413, "payload_too_large"),
    ([("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(21)], {}, 400, "too_many_files"),
    ([("files", ("a.jpg", b"x", "image/jpeg"))], {"tile_size": "100"}, 422, "invalid_options"),
    # 15 MP is within the upload limit, but x4 would be a 240 MP result
    ([("files", ("wide.png", _png_header(5000, 3000) + b"\0" * 64, "image/png"))], {"upscale": "4"}, 422,
     "output_too_large"),
    ([("files", ("a.jpg", b"x", "image/jpeg"))], {"quality": "ultra"}, 422, "invalid_options"),
])
def test_bad_batches_are_refused_and_nothing_is_written(client, gateway, files, data, status, code):
    good = ("files", ("ok.jpg", photo(5), "image/jpeg"))
    before = files_in(gateway)
    tasks_before = client.get("/api/v1/performance").json()["tasks"]
    r = client.post("/api/v1/enhance/batch", files=[good, *files], data=data)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert files_in(gateway) == before  # the good photo of the refused batch was not kept either
    assert client.get("/api/v1/performance").json()["tasks"] == tasks_before


def test_a_result_removed_before_the_download_is_named_in_the_manifest(client, gateway):
    files = [("files", (f"g{i}.jpg", photo(300 + i), "image/jpeg")) for i in range(2)]
    body = client.post("/api/v1/enhance/batch", files=files, data={"quality": "fast"}).json()
    for t in body["tasks"]:
        assert wait_task(client, t["task_id"])["state"] == "completed"
    gone = next(p for p in files_in(gateway) if p.name.startswith(body["tasks"][0]["task_id"] + ".out"))
    gone.unlink()  # as the TTL clean-up of another process would
    z = client.get(body["download_url"])
    assert z.status_code == 200
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        items = json.loads(zf.read("manifest.json"))["items"]
        assert items[0]["error"]["code"] == "result_expired" and "file" not in items[0]
        assert zf.read(items[1]["file"])[:2] == b"\xff\xd8" and len(zf.namelist()) == 2


def test_upscale_4_of_a_photo_whose_result_fits(client):
    r = client.post("/api/v1/enhance", files={"file": ("s.jpg", photo(7), "image/jpeg")},
                    data={"quality": "fast", "upscale": "4"})
    assert r.status_code == 202, r.text
    t = wait_task(client, r.json()["task_id"])
    out = cv2.imdecode(np.frombuffer(client.get(f"/api/v1/download/{t['task_id']}").content, np.uint8),
                       cv2.IMREAD_COLOR)
    assert out.shape == (960, 1280, 3)


def test_unknown_ids_and_single_bad_input(client):
    for url in ("/api/v1/tasks/nope", "/api/v1/download/nope", "/api/v1/batch/nope",
                "/api/v1/batch/nope/download", "/api/v1/batch/nope/events"):
        r = client.get(url)
        assert r.status_code == 404 and r.json()["code"] in ("task_not_found", "batch_not_found"), url
    r = client.post("/api/v1/enhance", files={"file": ("x.gif", b"GIF89a....", "image/gif")})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = client.post("/api/v1/enhance", data={"quality": "fast"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


def test_performance_and_metrics(client):
    p = client.get("/api/v1/performance").json()
    assert p["completed_total"] >= 1 and p["faces_total"] >= 1
    assert p["latency_ms"]["p50"] > 0 and p["queue_depth"] >= 0 and p["memory"]["rss_bytes"] > 0
    m = client.get("/metrics").text
    for name in ("enhance_tasks{state=\"completed\"}", "enhance_queue_depth", "enhance_duration_seconds_bucket",
                 "enhance_faces_total"):
        assert name in m, name
    page = client.get("/enhance")
    assert page.status_code == 200 and "Photo enhancement" in page.text

"""A dead Triton, a dead database, a dead Redis, oversized uploads and image bombs: each
gets a defined answer (JSON code, never a 500) and no accepted inspection is lost."""

from __future__ import annotations

import struct
import time
import uuid
import zlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from pcb.synthetic import render_board
from serving.cpu_server import free_port
from settings.environment import get_settings
from store.models import Inspection
from tests.conftest import encode
from tests.tcp_proxy import TcpProxy


def _app(monkeypatch, tmp_path, **env):
    base = {"DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "OUTBOX_PATH": str(tmp_path / "outbox.db"),
            "IMAGE_DIR": str(tmp_path / "img"), "PAIRING_WINDOW_MS": "300", "ADMIN_TOKEN": "outage-admin"}
    base.update(env)
    for k, v in base.items():
        monkeypatch.setenv(k, v)
    if "REDIS_URL" not in env:
        monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    from gateway.main import create_app

    # the operator routes need a role: the client carries the admin token (devices send theirs)
    return TestClient(create_app(), headers={"Authorization": f"Bearer {base['ADMIN_TOKEN']}"})


def _post(c, key, board, img=None, device="pi-left", headers=None):
    return c.post("/v1/inspect", headers={"X-Device-Id": device, "X-API-Key": key, **(headers or {})},
                  files={"image": ("b.jpg", img or encode(render_board(1).image), "image/jpeg")},
                  data={"board_id": board})


@pytest.fixture(autouse=True)
def _reset_settings():
    yield
    get_settings.cache_clear()


def test_dead_triton_is_503_with_retry_after(monkeypatch, tmp_path):
    with _app(monkeypatch, tmp_path, TRITON_URL=f"127.0.0.1:{free_port()}") as c:
        _, key = c.app.state.devices.create("pi-left", "left", True)
        r = _post(c, key, "B1")
        assert r.status_code == 503 and r.json()["code"] == "inference_unavailable"
        assert int(r.headers["Retry-After"]) >= 1
        assert c.app.state.outbox.depth() == 0  # nothing accepted, nothing half-written
        assert c.get("/health").json()["triton"] is False


def test_upload_cap_and_image_bomb(monkeypatch, tmp_path, triton):
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, MAX_UPLOAD_BYTES="50000") as c:
        _, key = c.app.state.devices.create("pi-left", "left", True)
        big = encode(render_board(2, size=(1600, 1200)).image, quality=98)
        assert len(big) > 50000
        r = _post(c, key, "B2", big)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        # a body far over the cap is refused from its Content-Length, before it is parsed
        huge = c.post("/v1/inspect", headers={"X-Device-Id": "pi-left", "X-API-Key": key,
                                              "Content-Type": "application/octet-stream"},
                      content=b"\0" * 200_000)
        assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
        bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0" * 100)
        r = c.post("/v1/inspect", headers={"X-Device-Id": "pi-left", "X-API-Key": key},
                   files={"image": ("bomb.png", bomb, "image/png")}, data={"board_id": "B3"})
        assert r.status_code == 422 and r.json()["code"] == "image_too_large"


def test_rate_limit_429(monkeypatch, tmp_path, triton):
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, RATE_LIMIT_PER_S="0.5",
              RATE_LIMIT_BURST="2") as c:
        _, key = c.app.state.devices.create("pi-right", "right", False)
        codes = [_post(c, key, f"R{i}", device="pi-right").status_code for i in range(4)]
        assert codes[:2] == [200, 200] and 429 in codes[2:]
        r = _post(c, key, "R9", device="pi-right")
        assert r.status_code == 429 and r.json()["code"] == "rate_limited" and "Retry-After" in r.headers


def test_database_outage_answers_and_loses_nothing(monkeypatch, tmp_path, triton, mariadb):
    proxy, url = mariadb
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, DATABASE_URL=url, ADMIN_TOKEN="outage-admin") as c:
        _, key = c.app.state.devices.create("pi-right", "right", False)
        assert _post(c, key, "D0", device="pi-right").status_code == 200
        proxy.cut()
        for i in range(1, 6):  # the line keeps going while MariaDB is away
            r = _post(c, key, f"D{i}", device="pi-right")
            assert r.status_code == 200, r.text
        assert c.get("/api/inspections").status_code == 503
        assert c.get("/api/inspections").json()["code"] == "database_unavailable"
        # a device key must be stored before it is shown: refused, not a 500
        r = c.post("/admin/devices", headers={"Authorization": "Bearer outage-admin"},
                   json={"device_id": "pi-new", "side": "left"})
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable", r.text
        time.sleep(1.0)
        assert c.app.state.outbox.depth() >= 5
        proxy.restore()
        deadline = time.monotonic() + 20
        while c.app.state.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.app.state.outbox.depth() == 0
        with c.app.state.sessions() as s:
            boards = sorted(s.scalars(select(Inspection.board_id)).all())
        assert boards == [f"D{i}" for i in range(6)]  # all six, once each
        assert "gateway_db_write_failures_total" in c.get("/metrics").text


def test_redis_outage_degrades_pairing_not_the_line(monkeypatch, tmp_path, triton):
    proxy = TcpProxy("127.0.0.1", 6379)
    try:
        with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url,
                  REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0") as c:
            _, lkey = c.app.state.devices.create("pi-left", "left", True)
            _, rkey = c.app.state.devices.create("pi-right", "right", False)
            board = f"RB-{uuid.uuid4().hex[:6]}"
            assert _post(c, rkey, board, device="pi-right").status_code == 200
            assert _post(c, lkey, board).json()["board"]["pairing"] == "paired"
            proxy.cut()
            t0 = time.monotonic()
            r = _post(c, lkey, f"RB-{uuid.uuid4().hex[:6]}")
            assert r.status_code == 200 and r.json()["board"]["pairing"] == "partial"
            assert r.json()["gpio"] is not None
            assert time.monotonic() - t0 < 5
            assert c.get("/api/system-status").json()["redis"] is False
    finally:
        proxy.close()


async def test_full_triton_queue_is_503_overloaded(triton):
    """A detector reloaded with a bounded Triton queue (room for 2; the shipped one has none,
    since a queue policy switches off prefetching) rejects the overflow; the gateway turns it
    into 503 inference_overloaded + Retry-After, the rest are answered."""
    import asyncio
    import copy

    from gateway.core.errors import ServiceUnavailable
    from gateway.services.triton import TritonService
    from inference.repository_api import RepositoryAPI

    admin = RepositoryAPI(triton.http_url)
    original = admin.config("pcb_detector")
    cfg = copy.deepcopy(original)
    cfg["dynamic_batching"]["default_queue_policy"] = {"max_queue_size": 2}
    cfg["dynamic_batching"]["max_queue_delay_microseconds"] = 200_000
    cfg["dynamic_batching"]["preferred_batch_size"] = [16]
    admin.load("pcb_detector", cfg)
    svc = TritonService(triton.grpc_url)
    try:
        img = encode(render_board(3).image)
        results = await asyncio.gather(*(svc.inspect(img) for _ in range(12)), return_exceptions=True)
        overloaded = [r for r in results if isinstance(r, ServiceUnavailable)]
        answered = [r for r in results if not isinstance(r, Exception)]
        assert overloaded and answered, results
        assert all(e.code == "inference_overloaded" and e.headers["Retry-After"] for e in overloaded)
        assert len(overloaded) + len(answered) == 12
    finally:
        await svc.close()
        # back to the original config (a plain reload keeps an override while the files on
        # disk are unchanged)
        admin.load("pcb_detector", original)
        assert admin.config("pcb_detector")["dynamic_batching"] == original["dynamic_batching"]
        admin.close()



async def test_boards_past_the_gateways_bound_are_503_overloaded(triton):
    """The line's bound without any Triton queue policy: with room for 2 boards in Triton, a
    burst of 12 gets the overflow refused at once (503 inference_overloaded + Retry-After)
    and the rest answered; the count drains back to zero, so the next board goes through."""
    import asyncio
    import contextlib

    from gateway.core.errors import ServiceUnavailable
    from gateway.services.triton import TritonService

    svc = TritonService(triton.grpc_url, max_in_flight=2)
    try:
        img = encode(render_board(4).image)
        results = await asyncio.gather(*(svc.inspect(img) for _ in range(12)), return_exceptions=True)
        overloaded = [r for r in results if isinstance(r, ServiceUnavailable)]
        answered = [r for r in results if not isinstance(r, Exception)]
        assert len(answered) == 2 and len(overloaded) == 10, results
        assert all(e.code == "inference_overloaded" and e.headers["Retry-After"] for e in overloaded)
        assert svc.in_flight == 0
        # a dual board is two images: one fills the room, the other two are refused
        dual = await asyncio.gather(*(svc.inspect_dual(img, img) for _ in range(3)), return_exceptions=True)
        assert sum(isinstance(r, ServiceUnavailable) for r in dual) == 2 and svc.in_flight == 0
        # a board given up on mid-flight (a client gone, a start-up wait_for) gives its room back
        task = asyncio.create_task(svc.inspect(img))
        await asyncio.sleep(0.005)
        assert svc.in_flight == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert svc.in_flight == 0
        side, _ = await svc.inspect(img)
        assert side.detector_version >= 1
        # a bound smaller than a dual board still lets one through when nothing else is in flight
        svc.max_in_flight = 1
        duo = await asyncio.gather(*(svc.inspect_dual(img, img) for _ in range(2)), return_exceptions=True)
        assert [isinstance(r, ServiceUnavailable) for r in duo] == [False, True], duo
    finally:
        await svc.close()

def test_gateway_restart_during_db_outage_loses_nothing(monkeypatch, tmp_path, triton, mariadb):
    proxy, url = mariadb
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, DATABASE_URL=url) as c:
        _, key = c.app.state.devices.create("pi-right", "right", False)
        proxy.cut()
        for i in range(4):
            assert _post(c, key, f"RS{i}", device="pi-right").status_code == 200
        assert c.app.state.outbox.depth() >= 4
    # the gateway is gone; the database comes back; a new gateway drains the old outbox
    proxy.restore()
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, DATABASE_URL=url) as c2:
        deadline = time.monotonic() + 20
        while c2.app.state.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.2)
        with c2.app.state.sessions() as s:
            boards = sorted(b for b in s.scalars(select(Inspection.board_id)).all() if b.startswith("RS"))
        assert boards == [f"RS{i}" for i in range(4)]


def test_blackholed_database_bounded_waits(monkeypatch, tmp_path, triton, mariadb):
    """MariaDB accepts connections and never answers: every database read on a request path
    (operator history, jobs, tuning, the shadow report) is a 503 within the 2 s read bound
    (+ scheduling margin), an admin write a 503 within its 5 s bound, system status answers
    within 2 s, and the line keeps inspecting."""
    from gateway.api.db_bounds import READ_TIMEOUT_S, WRITE_TIMEOUT_S

    proxy, url = mariadb
    with _app(monkeypatch, tmp_path, TRITON_URL=triton.grpc_url, DATABASE_URL=url) as c:
        _, key = c.app.state.devices.create("pi-right", "right", False)
        # a job that is never scheduled (state "held"): its status is a read, nothing else
        job = c.app.state.batch.store.create_job([("/nonexistent/a.jpg", "a.jpg")], priority=0, chunk_size=1,
                                                 state="held")
        reads = ("/api/inspections", "/api/statistics", "/api/system-logs", "/api/config", "/api/v1/jobs",
                 f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/items", "/api/v1/tuning",
                 "/admin/models/pcb_detector/shadow")
        for route in (*reads, f"/api/v1/jobs/{job}/results?format=summary"):  # each answers while the database does
            assert c.get(route).status_code == 200, (route, c.get(route).text)
        proxy.blackhole()
        try:
            for route in reads:
                t0 = time.monotonic()
                r = c.get(route)
                dt = time.monotonic() - t0
                assert r.status_code == 503 and r.json()["code"] == "database_unavailable", (route, r.text)
                assert dt <= READ_TIMEOUT_S + 0.5, (route, dt)  # the bound plus scheduling on 2 busy cores
            for method, route, body in (("POST", "/admin/devices", {"device_id": "pi-bh", "side": "left"}),
                                        ("PUT", "/admin/config", {"values": {"bh": "1"}}),
                                        ("POST", f"/api/v1/jobs/{job}/cancel", None)):
                t0 = time.monotonic()
                r = c.request(method, route, json=body)
                dt = time.monotonic() - t0
                assert r.status_code == 503 and r.json()["code"] == "database_unavailable", (route, r.text)
                assert dt <= WRITE_TIMEOUT_S + 0.5, (route, dt)
            t0 = time.monotonic()
            status = c.get("/api/system-status")
            assert status.status_code == 200 and status.json()["database"] is False
            assert time.monotonic() - t0 < 2.2
            t0 = time.monotonic()
            assert _post(c, key, "BH1", device="pi-right").status_code == 200  # the line goes on
            assert time.monotonic() - t0 < 2.0
        finally:
            proxy.restore()

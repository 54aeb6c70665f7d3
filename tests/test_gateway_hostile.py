"""Hostile inputs against a real gateway process, each sent over one raw keep-alive
connection followed by a ``/health`` on the *same* connection: every answer is the one the
code defines for it (its status and JSON ``code``; a far-off but valid date is an ordinary
200), never a 5xx, and the connection stays open (after a 500 the server used to drop it,
so the client's next request failed too). The catch-all 500 itself is checked against a
real uvicorn process too, with a route that raises."""

from __future__ import annotations

import http.client
import io
import socket
import zipfile
from typing import Any

import httpx
import pytest

from pcb.synthetic import render_board
from tests.conftest import encode
from tests.gateway_server import GatewayServer

TOKEN = "hostile-admin"


@pytest.fixture(scope="module")
def gateway(triton, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    srv = GatewayServer({"TRITON_URL": triton.grpc_url, "TRITON_HTTP_URL": triton.http_url,
                         "DATABASE_URL": f"sqlite:///{tmp / 'g.db'}", "OUTBOX_PATH": str(tmp / "o.db"),
                         "IMAGE_DIR": str(tmp / "img"), "ADMIN_TOKEN": TOKEN, "RATE_LIMIT_PER_S": "0",
                         "BATCH_DATA_DIR": str(tmp / "batch"), "BATCH_ALLOWED_ROOTS": str(tmp),
                         "PLANT_TIMEZONE": "Asia/Seoul"}, tmp / "gw.log").start()
    key = httpx.post(f"{srv.url}/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                     json={"device_id": "pi-left", "side": "left", "drives_gpio": True}).json()["api_key"]
    try:
        yield srv, key
    finally:
        srv.stop()


def _raw(sock: socket.socket, request: httpx.Request) -> tuple[int, dict, bytes]:
    """Send one HTTP/1.1 request on an open socket, read one answer."""
    body = request.read()
    lines = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "connection"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def _hostile_zips() -> dict[str, bytes]:
    img = encode(render_board(5).image)
    good = _zip([("a.jpg", img)])
    # the local and central headers say the member is 10 bytes: it is not
    understated = bytearray(good)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = understated.find(sig)
        understated[i + off:i + off + 4] = (10).to_bytes(4, "little")
    corrupt = bytearray(good)
    start = corrupt.find(b"PK\x03\x04") + 30 + len("a.jpg")
    corrupt[start + 10:start + 60] = b"\xff" * 50  # the deflate stream itself
    encrypted = bytearray(good)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = encrypted.find(sig)
        encrypted[i + off] |= 0x01  # the "encrypted" flag bit
    method99 = bytearray(good)
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = method99.find(sig)
        method99[i + off:i + off + 2] = (99).to_bytes(2, "little")  # AES / unknown compression
    return {"understated": bytes(understated), "corrupt_deflate": bytes(corrupt), "encrypted": bytes(encrypted),
            "method_99": bytes(method99)}


def _cases(url: str, key: str) -> list[tuple[str, httpx.Request]]:
    dev = {"X-Device-Id": "pi-left", "X-API-Key": key}
    admin = {"Authorization": f"Bearer {TOKEN}"}
    img = encode(render_board(3).image)
    cases = []
    for v in ("nan", "inf", "-inf", "1e20", "3e11", "-1e11"):
        cases.append((f"captured_at={v}", httpx.Request("POST", f"{url}/v1/inspect", headers=dev,
                                                          files={"image": ("b.jpg", img, "image/jpeg")},
                                                          data={"board_id": "H1", "captured_at": v})))
    cases += [
        ("inspections date_to=9999-12-31", httpx.Request("GET", f"{url}/api/inspections?date_to=9999-12-31",
                                                         headers=admin)),
        ("inspections date_from=0001-01-01", httpx.Request("GET", f"{url}/api/inspections?date_from=0001-01-01",
                                                           headers=admin)),
        ("statistics end_date=9999-12-31", httpx.Request("GET", f"{url}/api/statistics?end_date=9999-12-31",
                                                         headers=admin)),
        ("statistics start_date=0001-01-01", httpx.Request("GET", f"{url}/api/statistics?start_date=0001-01-01",
                                                           headers=admin)),
        ("source_dir with NUL", httpx.Request("POST", f"{url}/api/v1/jobs", data={"source_dir": "/tmp/a\x00b"},
                                              headers=admin)),
        ("unknown model load", httpx.Request("POST", f"{url}/admin/models/no_such_model/load", headers=admin,
                                             json={"version": 1})),
        ("model name traversal", httpx.Request("POST", f"{url}/admin/models/..%2F..%2Fetc/load", headers=admin,
                                               json={"version": 1})),
    ]
    for name, data in _hostile_zips().items():
        cases.append((f"zip {name}", httpx.Request("POST", f"{url}/api/v1/jobs", headers=admin,
                                                   files={"files": ("lot.zip", data, "application/zip")})))
    return cases


CASE_NAMES = [n for n, _ in _cases("http://x", "k")]

# each case's answer, as the code defines it: (status, JSON code), or (200, a check of the body)
CAPTURED_AT = (422, "invalid_captured_at")  # api/inspect.py checked_captured_at: before any work
ARCHIVE = (400, "invalid_archive")  # batch/sources.py: a member that cannot be extracted
EXPECTED: dict[str, tuple[int, Any]] = {
    **{f"captured_at={v}": CAPTURED_AT for v in ("nan", "inf", "-inf", "1e20", "3e11", "-1e11")},
    # valid dates, however far: the range is clamped to what the database compares ("until the end")
    "inspections date_to=9999-12-31": (200, lambda b: isinstance(b["items"], list)),
    "inspections date_from=0001-01-01": (200, lambda b: isinstance(b["items"], list)),
    "statistics end_date=9999-12-31": (200, lambda b: b["end_date"] == "9999-12-31"),  # echoed as asked
    "statistics start_date=0001-01-01": (200, lambda b: b["start_date"] == "0001-01-01"),
    "source_dir with NUL": (422, "invalid_source_dir"),
    "unknown model load": (404, "unknown_model"),
    # %2F is decoded before routing: /admin/models/../../etc/load matches no route
    "model name traversal": (404, "not_found"),
    **{f"zip {n}": ARCHIVE for n in ("understated", "corrupt_deflate", "encrypted", "method_99")},
}


def test_every_hostile_case_has_its_expected_answer():
    assert sorted(EXPECTED) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_input_is_a_defined_answer_and_keeps_the_connection(gateway, name):
    srv, key = gateway
    request = dict(_cases(srv.url, key))[name]
    want_status, want = EXPECTED[name]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        status, headers, body = _raw(sock, request)
        assert status == want_status, (status, body[:300])
        assert headers.get("content-type", "").startswith("application/json")
        answer = httpx.Response(status, content=body).json()
        if status >= 400:
            assert answer["code"] == want, answer
        else:
            assert want(answer), answer
        assert headers.get("connection", "").lower() != "close"
        again, _, _ = _raw(sock, httpx.Request("GET", f"{srv.url}/health"))  # the same connection
        assert again == 200


def test_an_unexpected_error_is_a_json_500_on_a_live_connection(gateway, monkeypatch):
    """The catch-all: a bug no hostile input above reaches must still answer JSON and keep
    the connection (in-process app, the same middleware stack)."""
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from gateway.core.middleware import RequestMiddleware

    async def broken(request):
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/anything", broken)],
                    middleware=[Middleware(RequestMiddleware, max_body_bytes=1000)])
    with TestClient(app) as c:  # the middleware answers and does not re-raise: the client sees JSON
        r = c.get("/anything")
        assert r.status_code == 500 and r.json()["code"] == "internal_error"


def test_an_unexpected_error_is_a_json_500_and_a_real_server_keeps_the_connection(tmp_path):
    """The same, against a real uvicorn process serving the real gateway app plus a route
    that raises: the 500 is JSON with its code, and the client's next request goes over the
    *same* socket (uvicorn closes a connection when an exception reaches it)."""
    from tests.broken_gateway import BROKEN_PATH, BUG

    log = tmp_path / "gw.log"
    srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                         "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_DIR": str(tmp_path / "img"),
                         "ADMIN_TOKEN": TOKEN, "BATCH_DATA_DIR": str(tmp_path / "batch")},
                        log, factory="tests.broken_gateway:create").start()
    connections: list[tuple[str, int]] = []

    def local_address(response: httpx.Response) -> None:
        # the client side of the socket the answer came over: one address = one connection
        connections.append(response.extensions["network_stream"].get_extra_info("client_addr"))

    try:
        with httpx.Client(base_url=srv.url, timeout=30, event_hooks={"response": [local_address]}) as c:
            r = c.get(BROKEN_PATH)
            assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
            assert r.json()["code"] == "internal_error" and BUG not in r.text  # no trace to the client
            assert r.headers.get("connection", "").lower() != "close"
            again = c.get("/health/live")
            assert again.status_code == 200 and again.json() == {"status": "alive"}
        assert len(connections) == 2 and isinstance(connections[0], tuple), connections
        assert connections[0] == connections[1], connections
    finally:
        srv.stop()
    assert f"RuntimeError: {BUG}" in log.read_text()  # logged with its traceback, not lost

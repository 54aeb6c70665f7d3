"""Every body is bounded, chunked or not: a 50 MB body sent with chunked transfer encoding
(no Content-Length) to every upload route is a 413 once the route's limit is passed, and
the gateway process does not hold the body (its RSS grows < 20 MB over all of them)."""

from __future__ import annotations

import json
import select
import socket
import time

import psutil
import pytest

from tests.gateway_server import GatewayServer

MB = 1 << 20
ROUTES = ["/v1/inspect", "/v1/inspect/dual", "/predict", "/predict_dual", "/api/v1/enhance",
          "/api/v1/enhance/batch", "/api/v1/jobs"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    d = tmp_path_factory.mktemp("bodies")
    srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "ADMIN_TOKEN": "bodies-admin", "SEED_COMPAT": "true",
                         "MAX_UPLOAD_BYTES": str(2 * MB), "ENHANCE_MAX_BATCH_BYTES": str(4 * MB),
                         "BATCH_MAX_UPLOAD_BYTES": str(4 * MB), "BATCH_DATA_DIR": str(d / "batch"),
                         "ENHANCE_DIR": str(d / "enh")}, d / "gw.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def _chunked(port: int, path: str, total: int, content_type: str, prefix: bytes) -> tuple[int, dict, int]:
    """Send ``total`` bytes chunked; stop as soon as the server answers. (status, body, sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bodies-admin\r\n"
                 f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sock.sendall(f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")  # a valid start, then one endless field
    chunk = b"A" * (256 * 1024)
    sent = 0
    answer = b""
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:  # answered before the end: it stopped reading
                answer += sock.recv(65536)
                if b"\r\n\r\n" in answer or not answer:
                    break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break  # the server closed its side after answering
            sent += len(chunk)
        if b"\r\n\r\n" not in answer and sent >= total:
            sock.sendall(b"0\r\n\r\n")
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
            if time.monotonic() > deadline:
                break
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body[body.index(b"{"):body.rindex(b"}") + 1]), sent


def test_chunked_bodies_stop_at_the_limit_without_growing_the_worker(gw):
    proc = psutil.Process(gw.proc.pid)
    base = proc.memory_info().rss
    peak = base
    for path in ROUTES:
        if path.startswith("/predict"):
            ctype, prefix = "application/json", b'{"frame": "'
        else:
            ctype = "multipart/form-data; boundary=xyz"
            prefix = (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
                      b"Content-Type: image/jpeg\r\n\r\n")
        status, body, sent = _chunked(gw.port, path, 50 * MB, ctype, prefix)
        peak = max(peak, proc.memory_info().rss)
        assert status == 413 and body["code"] == "payload_too_large", (path, status, body)
        assert sent < 50 * MB, (path, sent)  # answered long before the client finished
    grew = (peak - base) / MB
    print(f"worker RSS grew {grew:.1f} MB over {len(ROUTES)} chunked 50 MB bodies")
    assert grew < 20

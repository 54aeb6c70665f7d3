"""Every body is bounded, chunked or not: a 50 MB body sent with chunked transfer encoding
(no Content-Length) to every upload route is a 413 once the route's limit is passed, and
the gateway process does not hold the body (its RSS, sampled every 20 ms while each upload
runs, grows < 20 MB). Every other route (sign-in, admin and edge JSON, feedback) takes at
most ``SMALL_BODY_BYTES``: bodies are read before authentication, so an anonymous 1 MB body
is a 413 there, and the keep-alive connection still serves the next request.

The module's gateway lowers the batch ZIP and enhancement-batch limits to 4 MB so each
50 MB stream passes its limit early. The shipped defaults (``BATCH_MAX_UPLOAD_BYTES`` 512 MB,
``ENHANCE_MAX_BATCH_BYTES`` 120 MB) are above 50 MB by design (a lot of photos in one
request): there the bound on what one request may make the gateway read is that limit
itself, spooled to disk rather than held; ``test_the_shipped_enhancement_batch_limit_holds``
sends one stream just over the shipped 120 MB."""

from __future__ import annotations

import json
import select
import socket
import threading
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


def _chunked(port: int, path: str, total: int, content_type: str, prefix: bytes,
             token: str = "bodies-admin") -> tuple[int, dict, int]:
    """Send ``total`` bytes chunked; stop as soon as the server answers. (status, body, sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
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


class PeakRss:
    """A process's resident memory sampled every 20 ms in a thread while the block runs: a
    body held for a moment and let go between two requests shows here, not between them."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grew_mb(self) -> float:
        return (self.peak - self.base) / MB


def _upload_start(path: str) -> tuple[str, bytes]:
    if path.startswith("/predict"):
        return "application/json", b'{"frame": "'
    return ("multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")


def test_chunked_bodies_stop_at_the_limit_without_growing_the_worker(gw):
    for path in ROUTES:
        ctype, prefix = _upload_start(path)
        with PeakRss(gw.proc.pid) as rss:
            status, body, sent = _chunked(gw.port, path, 50 * MB, ctype, prefix)
        assert status == 413 and body["code"] == "payload_too_large", (path, status, body)
        assert sent < 50 * MB, (path, sent)  # answered long before the client finished
        print(f"{path}: worker RSS peak +{rss.grew_mb:.1f} MB during a chunked 50 MB body")
        assert rss.grew_mb < 20, (path, rss.grew_mb)


def _response(sock: socket.socket, buf: bytes) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length read off ``sock``: (status, JSON, what follows)."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        assert more, f"connection closed; got {buf[:200]!r}"
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        more = sock.recv(65536)
        assert more, "connection closed mid-answer"
        rest += more
    return int(head.split(b" ", 2)[1]), json.loads(rest[:length]), rest[length:]


@pytest.mark.parametrize("path, ctype, start", [
    ("/login", "application/x-www-form-urlencoded", b"key="),
    ("/admin/devices", "application/json", b'{"device_id": "'),
    ("/v1/line-session", "application/json", b'{"line_id": "'),
    ("/api/inspections/x/feedback", "application/json", b'{"note": "'),
])
def test_small_routes_refuse_a_big_anonymous_body_and_keep_the_connection(gw, path, ctype, start):
    """1 MB chunked, no credential: 413 ``payload_too_large`` at 64 KB, not a 20 MB read
    before the 401; the rest of the body is discarded and the same connection answers
    ``/health/live`` next."""
    from gateway.core.middleware import SMALL_BODY_BYTES

    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nOrigin: http://x\r\nContent-Type: {ctype}\r\n"
                     f"Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = start + b"A" * (64 * 1024 - len(start))
        for _ in range(16):  # 1 MB in all, every byte sent (the server discards what it does not read)
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            chunk = b"A" * (64 * 1024)
        sock.sendall(b"0\r\n\r\n")
        status, body, rest = _response(sock, b"")
        assert status == 413 and body["code"] == "payload_too_large", (path, status, body)
        assert str(SMALL_BODY_BYTES) in body["message"]
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body, _ = _response(sock, rest)
        assert status == 200 and body["status"] == "alive", body
    finally:
        sock.close()


def test_the_shipped_enhancement_batch_limit_holds(tmp_path):
    """One chunked stream just over the shipped ENHANCE_MAX_BATCH_BYTES (120 MB): read up to
    the limit (spooled, not held), then 413; the worker's RSS stays flat meanwhile."""
    from settings.environment import Settings

    shipped = Settings.model_fields["enhance_max_batch_bytes"].default
    srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                         "OUTBOX_PATH": str(tmp_path / "o.db"), "ADMIN_TOKEN": "bodies-admin",
                         "BATCH_DATA_DIR": str(tmp_path / "batch"), "ENHANCE_DIR": str(tmp_path / "enh")},
                        tmp_path / "gw.log").start()
    try:
        ctype, prefix = _upload_start("/api/v1/enhance/batch")
        with PeakRss(srv.proc.pid) as rss:
            status, body, sent = _chunked(srv.port, "/api/v1/enhance/batch", shipped + MB, ctype, prefix)
        assert status == 413 and body["code"] == "payload_too_large", (status, body)
        assert shipped - MB < sent <= shipped + MB  # the gateway did read up to its limit
        print(f"shipped enhancement batch limit: RSS peak +{rss.grew_mb:.1f} MB over {sent / MB:.0f} MB")
        assert rss.grew_mb < 20
    finally:
        srv.stop()

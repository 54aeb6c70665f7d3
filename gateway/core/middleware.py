"""One plain ASGI middleware for every request: bound every body (from its Content-Length
before anything reads it, and by counting the bytes the app actually receives, so a chunked
body without a length stops at the route's limit too: 413, nothing more is read), give the
request an id
(echoed as ``X-Request-Id`` and put in every log line), record the route's count and
latency, and turn any exception that escaped the routes into a JSON 500 (code
``internal_error``, logged with its traceback). Here rather than in an exception handler:
Starlette's outermost error middleware re-raises after answering, and the server then
closes the keep-alive connection, so the client's *next* request would fail too. Plain ASGI rather than ``@app.middleware``: Starlette's BaseHTTPMiddleware adds a
task and a stream per layer, per request, on the hot path."""

from __future__ import annotations

import json
import logging
import time
import uuid

from gateway.core.logging import request_id
from gateway.core.metrics import REQUEST_LATENCY, REQUESTS

log = logging.getLogger("gateway")


# the gateway's own pages: scripts and styles only from files of this site, nothing inline,
# no framing, forms only back here (Swagger UI at /docs loads its assets elsewhere: exempt)
PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]


class BodyTooLarge(Exception):
    """The body went past the route's limit while being received."""


def _json_answer(status: int, payload: dict) -> tuple[dict, dict]:
    body = json.dumps(payload).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body})


class RequestMiddleware:
    def __init__(self, app, max_body_bytes: int, path_limits: dict[str, int] | None = None):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.path_limits = path_limits or {}  # routes that take more (a batch of photos)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        rid = (headers.get(b"x-request-id") or b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        t0 = time.perf_counter()
        status = 500
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        started = False
        limit = self.path_limits.get(scope.get("path", ""), self.max_body_bytes)
        received, too_large = 0, False

        async def counted_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge  # stop reading: the rest never enters this process
            return message

        async def answer_413():
            nonlocal status, started
            if started:
                return
            start, body = _json_answer(413, {"code": "payload_too_large", "message": f"request body over {limit} bytes"})
            start["headers"].append(rid_header)
            status, started = 413, True
            await send(start)
            await send(body)

        async def send_with_id(message):
            nonlocal status, started
            if too_large:  # whatever the app made of the cut body, the answer is 413; its own is dropped
                if message["type"] == "http.response.start":
                    await answer_413()
                return
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                extra = [rid_header]
                if scope.get("path") != "/docs" and any(
                        k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in message.get("headers", [])):
                    extra += PAGE_HEADERS
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                too_large = True
                await answer_413()
                return
            try:
                await self.app(scope, counted_receive, send_with_id)
            except Exception:
                if too_large:
                    await answer_413()
                    return
                log.exception("unhandled error")
                if started:  # half an answer is out: nothing honest left to send
                    raise
                start, body = _json_answer(500, {"code": "internal_error", "request_id": rid,
                                                 "message": "internal error; see the gateway log"})
                await send_with_id(start)
                await send(body)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            dt = time.perf_counter() - t0
            REQUESTS.labels(path, scope["method"], str(status)).inc()
            REQUEST_LATENCY.labels(path, scope["method"]).observe(dt)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %s", scope["method"], path, status,
                         extra={"route": path, "status": status, "duration_ms": round(dt * 1000, 2)})
            request_id.reset(token)

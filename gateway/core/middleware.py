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


def is_event_stream(path: str) -> bool:
    """The routes that hold a connection open (Server-Sent Events)."""
    return path == "/api/live" or path.endswith("/events")


# big uploads are authorized *before* their body is read: an anonymous caller must not make
# the gateway parse (or spool) hundreds of megabytes only to be told 401 afterwards
UPLOAD_ROLES = {"/api/v1/jobs": "operator", "/api/v1/enhance": "operator", "/api/v1/enhance/batch": "operator"}


def _role_before_body(scope) -> str | None:
    path = scope.get("path", "")
    if scope.get("method") == "POST" and path in UPLOAD_ROLES:
        return UPLOAD_ROLES[path]
    if is_event_stream(path):
        return "operator" if path.startswith("/api/v1/batch/") else "viewer"
    return None


async def _authorize_early(scope, role: str):
    """The caller (``gateway.core.security.authorize``) or the ApiError to answer with."""
    from starlette.requests import Request

    from gateway.core.errors import ApiError
    from gateway.core.security import SESSION_COOKIE, authorize, bearer_of

    request = Request(scope)
    try:
        return await authorize(request, role, bearer_of(request), request.cookies.get(SESSION_COOKIE)), None
    except ApiError as e:
        return None, e


# any route's body unless it is an upload (``path_limits``): a login form, an admin or edge
# JSON document. Bodies are read before authentication, so anyone may send this much
SMALL_BODY_BYTES = 64 * 1024


class RequestMiddleware:
    def __init__(self, app, max_body_bytes: int = SMALL_BODY_BYTES, path_limits: dict[str, int] | None = None,
                 max_streams: int = 8):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.path_limits = path_limits or {}  # the uploads, each with its own (larger) limit
        # event streams open at once per credential: a dashboard needs 2-3, a leak or a
        # flood gets 429 instead of holding workers' connections forever
        self.max_streams = max_streams
        self._streams: dict[str, int] = {}

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

        stream_key = None
        try:
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                too_large = True
                await answer_413()
                return
            role = _role_before_body(scope) if "app" in scope else None
            if role is not None:
                caller, refusal = await _authorize_early(scope, role)
                if refusal is not None:
                    start, body = _json_answer(refusal.status, {"code": refusal.code, "message": refusal.message})
                    start["headers"] += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
                    await send_with_id(start)
                    await send(body)
                    return
                if is_event_stream(scope.get("path", "")):
                    stream_key = caller.id  # the caller, however the credential was spelled
            if stream_key is not None:
                if self._streams.get(stream_key, 0) >= self.max_streams:
                    start, body = _json_answer(429, {"code": "too_many_streams", "message":
                                                     f"at most {self.max_streams} event streams at once per caller"})
                    start["headers"].append((b"retry-after", b"5"))
                    await send_with_id(start)
                    await send(body)
                    stream_key = None  # nothing taken, nothing to give back
                    return
                self._streams[stream_key] = self._streams.get(stream_key, 0) + 1
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
            if stream_key is not None:
                self._streams[stream_key] -= 1
                if not self._streams[stream_key]:
                    del self._streams[stream_key]
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            dt = time.perf_counter() - t0
            REQUESTS.labels(path, scope["method"], str(status)).inc()
            REQUEST_LATENCY.labels(path, scope["method"]).observe(dt)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %s", scope["method"], path, status,
                         extra={"route": path, "status": status, "duration_ms": round(dt * 1000, 2)})
            request_id.reset(token)

"""Who is calling, and may they: the gateway's access model.

Roles (each route names one; see README "Security"):

- ``device``: an edge (``X-Device-Id`` + ``X-API-Key``): inspect, heartbeat, line session;
- ``viewer``: history, statistics, images, system status, the dashboard and its streams,
  the API docs;
- ``operator``: everything a viewer may, plus batch jobs and photo enhancement;
- ``admin``: everything, plus models, devices, principals and configuration.

Credentials: ``Authorization: Bearer <key>`` (a principal's key ``<id>.<secret>``, or the
bootstrap ``ADMIN_TOKEN``; a bare token without ``Bearer`` is refused), or the session
cookie the login page sets (HttpOnly, SameSite=Strict; for the dashboard and the
enhancement page). No credential or a wrong one is 401; a credential whose role is too low
is 403. Failed authentications are rate limited per client address (key guessing), every
principal per principal and every device per device (one ``limits`` moving-window limiter).

``AUTH_MODE=off`` opens every principal route (a lab bench; logged loudly at start).
Device routes always need a device: its side and GPIO duty come from its registration.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from gateway.core.errors import ApiError, RateLimited, Unauthorized
from settings.environment import Settings, get_settings

log = logging.getLogger("gateway.security")

SESSION_COOKIE = "pcb_session"
SESSION_TTL_S = 12 * 3600  # one shift and some
BOOTSTRAP_ID = "admin-token"

ALLOWED = {
    "viewer": {"viewer", "operator", "admin"},
    "operator": {"operator", "admin"},
    "admin": {"admin"},
}

# values that mean "nobody set this": refused at start rather than guarded by them
PLACEHOLDERS = {"change-me", "changeme", "change_me", "replace-me", "admin", "password", "secret", "token",
                "default", "test", "xxx", "none", "null", "todo"}


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Caller:
    id: str
    role: str
    via: str  # "key", "admin_token", "session", "auth_off"


# every setting that holds a secret: a placeholder in any of them refuses to start
SECRET_SETTINGS = ("admin_token", "session_secret", "metrics_token", "triton_admin_key")


def check_settings(s: Settings) -> None:
    """At start: refuse placeholder secrets; say loudly when access control is off."""
    for name in SECRET_SETTINGS:
        value = getattr(s, name)
        v = (value or "").strip().lower()
        if value is not None and (v in PLACEHOLDERS or any(m in v for m in ("change-me", "changeme", "change_me"))):
            raise ValueError(f"{name.upper()}={value!r} is a placeholder: set a random secret "
                             "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if s.auth_mode == "off":
        for _ in range(3):
            log.warning("AUTH_MODE=off: EVERY ROUTE IS OPEN TO ANYONE WHO CAN REACH THIS GATEWAY (lab use only)")


# ---- sessions: <principal id>.<expiry>.<mac>, signed with a secret every replica shares ----
_process_secret = secrets.token_bytes(32)


def _session_key() -> bytes:
    s = get_settings()
    if s.session_secret:
        return s.session_secret.encode()
    if s.admin_token:  # replicas share it, so sessions survive a hop between them
        return hmac.new(s.admin_token.encode(), b"pcb-session-key", hashlib.sha256).digest()
    return _process_secret


def session_token(principal_id: str, ttl_s: int = SESSION_TTL_S) -> str:
    body = f"{principal_id}.{int(time.time()) + ttl_s}"
    mac = hmac.new(_session_key(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def session_principal(token: str) -> str | None:
    try:
        pid, exp, mac = token.rsplit(".", 2)
        fresh = int(exp) > time.time()
    except ValueError:
        return None
    good = hmac.new(_session_key(), f"{pid}.{exp}".encode("utf-8", "replace"), hashlib.sha256).hexdigest()
    # bytes, not str: compare_digest refuses non-ASCII text (a hostile cookie must be a 401)
    return pid if hmac.compare_digest(mac.encode("utf-8", "replace"), good.encode()) and fresh else None


# ---- rate limits (kept library: ``limits``; per worker) ----------------------------------
_limiter = MovingWindowRateLimiter(MemoryStorage())


def _refused(item, key: tuple[str, ...], message: str) -> RateLimited:
    reset = _limiter.get_window_stats(item, *key).reset_time
    return RateLimited(message, headers={"Retry-After": str(max(1, int(reset - time.time() + 0.999)))})


def limit(rule: str, *key: str) -> None:
    item = parse(rule)
    if not _limiter.hit(item, *key):
        raise _refused(item, key, f"too many requests ({rule}) from {key[-1]}")


def limit_device(device_id: str) -> None:
    """Per device (``RATE_LIMIT_PER_S`` sustained, ``RATE_LIMIT_BURST`` at once; rate 0: off):
    a window of BURST/RATE seconds, rounded up to whole seconds, takes BURST requests or
    RATE x window, whichever is more (60 in 2 s by default). Unlike a token bucket, a device that spent its whole burst waits
    for the window to slide rather than trickling on at RATE; a line (~10 frames/s a camera)
    never comes near it. The same limiter as every other budget here."""
    s = get_settings()
    if s.rate_limit_per_s <= 0:
        return
    window = max(1, math.ceil(s.rate_limit_burst / s.rate_limit_per_s))
    # never below the sustained rate: BURST 10 at RATE 30 is 30 per second, not 10
    item = RateLimitItemPerSecond(max(1, s.rate_limit_burst, math.ceil(s.rate_limit_per_s * window)), window)
    key = ("device", device_id)
    if not _limiter.hit(item, *key):
        raise _refused(item, key, f"more than {s.rate_limit_per_s:g} requests/s from {device_id}")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def claimed_id(token: str) -> str:
    """Whose key a credential claims to be (the public id before the dot), for the limiter.
    A credential without one (the bootstrap admin token, or a guess at it) claims ""."""
    return token.split(".", 1)[0][:64] if "." in token else ""


def _claimed(request: Request) -> str:
    """A principal's key names its id before the dot; a device names itself in its header."""
    bearer = bearer_of(request)
    if bearer:
        return claimed_id(bearer)
    return (request.headers.get("x-device-id") or "")[:64]


def _fail_keys(request: Request, claimed: str | None) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
    """Two budgets: per (address, claimed id), so guessing one key is slowed down while a
    shared NAT address is not locked out for everyone else, and a wider one per address, so
    a flood of guesses across many claimed ids is slowed down too (only such a flood spends
    it: the line's devices and a dashboard never come near it)."""
    s, addr = get_settings(), client_address(request)
    return [(parse(s.auth_fail_rate), ("auth-fail", addr, _claimed(request) if claimed is None else claimed)),
            (parse(s.auth_fail_addr_rate), ("auth-fail-addr", addr))]


def failed_auth(request: Request, claimed: str | None = None) -> None:
    """Count a failed authentication against both budgets (``_fail_keys``)."""
    refused = None
    for item, key in _fail_keys(request, claimed):
        if not _limiter.hit(item, *key) and refused is None:
            refused = _refused(item, key, f"too many failed authentications from {key[1]}")
    if refused is not None:
        raise refused


def auth_lock(request: Request) -> asyncio.Lock:
    """One slow credential check at a time per worker (a key not in memory: the check may read
    the database, in a thread), so a burst of unknown keys reloads the registry once, not 32
    times at once. Held by the sign-in form across its budget check, key check and count."""
    lock = getattr(request.app.state, "auth_lock", None)
    if lock is None:
        lock = request.app.state.auth_lock = asyncio.Lock()
    return lock


def guard_guessing(request: Request, claimed: str | None = None) -> None:
    """Before any key is checked: over either failure budget gets 429 even for a right
    guess, so guessing cannot run at full speed."""
    for item, key in _fail_keys(request, claimed):
        if not _limiter.test(item, *key):
            raise _refused(item, key, f"too many failed authentications from {key[1]}")


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def check_origin(request: Request) -> None:
    """A request that changes something on the strength of the session cookie must come
    from this site's own pages. SameSite=Strict already keeps the cookie off cross-site
    requests; this second check (OWASP's "verify the origin with standard headers") holds
    where SameSite does not, e.g. a sibling site on the same registrable domain. Browsers
    send ``Origin`` on every unsafe cross-origin request, so a missing one is not a browser
    acting for another site."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return
    allowed = {(request.headers.get("host") or "").lower()}
    allowed |= {urlsplit(o.strip()).netloc.lower() for o in get_settings().public_origins.split(",") if o.strip()}
    if urlsplit(origin).netloc.lower() not in allowed:
        raise Forbidden(f"a signed-in change must come from this site's pages, not {origin[:100]}", "cross_origin")


def identify(request: Request, bearer: str | None, cookie: str | None, reload: bool = True) -> Caller | None:
    """Who holds this credential, or None. ``reload=False``: memory only (on the event loop)."""
    s = get_settings()
    if s.auth_mode == "off":
        return Caller("lab", "admin", "auth_off")
    if bearer:
        if s.admin_token and hmac.compare_digest(bearer.encode(), s.admin_token.encode()):
            return Caller(BOOTSTRAP_ID, "admin", "admin_token")
        p = request.app.state.principals.check(bearer, reload)
        if p is not None:
            return Caller(p.id, p.role, "key")
    if cookie:
        pid = session_principal(cookie)
        if pid == BOOTSTRAP_ID and s.admin_token:
            return Caller(BOOTSTRAP_ID, "admin", "session")
        p = request.app.state.principals.get(pid) if pid else None
        if p is not None and p.enabled:
            return Caller(p.id, p.role, "session")
    return None


_bearer = HTTPBearer(auto_error=False, description="a principal's API key, or ADMIN_TOKEN")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="set by /login")


def bearer_of(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; any other form is no credential."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def authorize(request: Request, role: str, bearer: str | None = None, cookie: str | None = None) -> Caller:
    """The caller, if they hold ``role`` (or a role above it); else 401 or 403.

    On the event loop, and the budget check, the in-memory check and a failure's count run
    with no await between them, so a burst of concurrent guesses is counted one by one (a
    right key behind them meets the 429). Only a key naming a principal unknown here goes to
    a thread, in turn (``auth_lock``), to reload the principals from the database; it was
    counted as a failure first, so a principal created through another worker a moment ago
    costs one count."""
    guard_guessing(request)
    caller = identify(request, bearer, cookie, reload=False)
    if caller is None:
        failed_auth(request)
        if bearer and claimed_id(bearer):
            async with auth_lock(request):
                caller = await asyncio.to_thread(identify, request, bearer, None)
    if caller is None:
        why = "wrong credential" if (bearer or cookie) else "no credential"
        raise Unauthorized(f"{why}: send Authorization: Bearer <key>, or sign in at /login",
                           "unauthorized", headers={"WWW-Authenticate": "Bearer"})
    if caller.via == "session":
        check_origin(request)
    if caller.role not in ALLOWED[role]:
        raise Forbidden(f"this needs the {role} role; {caller.id} is {caller.role}")
    request.state.principal = caller.id
    if caller.via != "auth_off":
        limit(get_settings().principal_rate, "principal", caller.id)
    return caller


def require(role: str):
    """A dependency: the caller must hold ``role`` (or a role above it). The security
    schemes are declared so ``openapi.json`` documents them for generated clients."""

    async def dependency(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
                         cookie: Annotated[str | None, Depends(_cookie)] = None) -> Caller:
        return await authorize(request, role, bearer_of(request), cookie)

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Caller, Depends(require("viewer"))]
Operator = Annotated[Caller, Depends(require("operator"))]
Admin = Annotated[Caller, Depends(require("admin"))]

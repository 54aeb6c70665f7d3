"""The access model against a real gateway process: every route in ``openapi.json`` (and
the pages and streams outside it) called without a credential is 401, except an explicit
open list; with a role too low, 403; with the right one, neither. Keys are created, listed
and revoked through the API and the CLI; a bare token, a wrong key or a revoked key is
refused; the login page sets an HttpOnly SameSite=Strict session; placeholders refuse to
start; failed authentications are rate limited per client address; the seed routes are off
by default and, when on, need a device key or an allow-listed network."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys

import httpx
import pytest

from gateway.core.security import check_settings
from settings.environment import Settings
from tests.conftest import ROOT
from tests.gateway_server import GatewayServer

TOKEN = "security-admin-token"
# open on purpose (README "Security"): probes, the sign-in page and its static files
OPEN = {("GET", "/health"), ("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/login"),
        ("POST", "/login"), ("POST", "/logout"), ("GET", "/static/login.js")}
# not in openapi.json (pages, streams, the scrape endpoint, the docs themselves): role each
OUTSIDE_SCHEMA = {("GET", "/"): "viewer", ("GET", "/enhance"): "operator", ("GET", "/api/live"): "viewer",
                  ("GET", "/metrics"): "admin", ("GET", "/docs"): "viewer", ("GET", "/openapi.json"): "viewer"}
DEVICE_ROUTES = {("POST", "/v1/inspect"), ("POST", "/v1/inspect/dual"), ("POST", "/v1/heartbeat"),
                 ("POST", "/v1/line-session")}
RANK = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.fixture(scope="module")
def gw(triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("sec")
    srv = GatewayServer({"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{d / 'g.db'}",
                         "OUTBOX_PATH": str(d / "o.db"), "IMAGE_DIR": str(d / "img"), "ADMIN_TOKEN": TOKEN,
                         "BATCH_DATA_DIR": str(d / "batch"), "ENHANCE_DIR": str(d / "enh"),
                         "AUTH_FAIL_RATE": "100000/minute", "AUTH_FAIL_ADDR_RATE": "100000/minute", "METRICS_TOKEN": "scrape-token-for-tests",
                         "MAX_EVENT_STREAMS": "3"},
                        d / "gw.log").start()
    admin = {"Authorization": f"Bearer {TOKEN}"}
    keys = {}
    for role in ("viewer", "operator", "admin"):
        r = httpx.post(f"{srv.url}/admin/principals", headers=admin, json={"name": f"t-{role}", "role": role})
        assert r.status_code == 201, r.text
        keys[role] = r.json()["api_key"]
    dev = httpx.post(f"{srv.url}/admin/devices", headers=admin,
                     json={"device_id": "pi-left", "side": "left", "drives_gpio": True}).json()["api_key"]
    srv.keys, srv.device = keys, {"X-Device-Id": "pi-left", "X-API-Key": dev}
    srv.db = d / "g.db"
    srv.spec = httpx.get(f"{srv.url}/openapi.json", headers=admin).json()
    try:
        yield srv
    finally:
        srv.stop()


def _routes(spec: dict) -> dict[tuple[str, str], str | None]:
    """(method, path) -> the role its security declares (None: device or open)."""
    out: dict[tuple[str, str], str | None] = {}
    for path, ops in spec["paths"].items():
        for method in ops:
            out[(method.upper(), re.sub(r"\{[^}]+\}", "x", path))] = None
    return out


def _call(gw, method: str, path: str, headers: dict | None = None) -> httpx.Response:
    """One request; only the status and a little of the body are read (event streams never end)."""
    with httpx.stream(method, gw.url + path, headers=headers or {}, timeout=30, follow_redirects=False) as r:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return httpx.Response(r.status_code, headers=r.headers)
        r.read()
        return r


def test_every_route_needs_a_credential_except_the_open_list(gw):
    routes = {**_routes(gw.spec), **OUTSIDE_SCHEMA}
    assert len(routes) > 40
    seen_open = set()
    for (method, path) in sorted(routes):
        r = _call(gw, method, path)
        if (method, path) in OPEN:
            seen_open.add((method, path))
            continue
        if path in ("/predict", "/predict_dual"):
            assert r.status_code == 404, (method, path, r.status_code)  # off by default
            continue
        if method == "GET" and path in ("/", "/enhance"):
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (path, r.status_code)
            continue
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        assert r.json()["code"] in ("unauthorized", "unknown_device")
    for method, path in OPEN:
        assert _call(gw, method, path).status_code < 500


def _required(method: str, path: str) -> str:
    if (method, path) in OUTSIDE_SCHEMA:
        return OUTSIDE_SCHEMA[(method, path)]
    if path.startswith("/admin") or path == "/api/config":  # configuration, read or written: admin
        return "admin"
    if path.startswith("/api/v1/enhance") or path.startswith("/api/v1/tasks") or path.startswith("/api/v1/batch") \
            or path.startswith("/api/v1/download") or path == "/api/v1/performance":
        return "operator"
    if path.startswith("/api/v1/jobs") or path == "/api/v1/tuning":
        return "viewer" if method == "GET" else "operator"
    if path.endswith("/feedback") and method == "POST":  # marking a verdict wrong
        return "operator"
    return "viewer"


def test_a_role_too_low_is_403_and_the_right_one_passes(gw):
    checked = 0
    for (method, path) in sorted({**_routes(gw.spec), **OUTSIDE_SCHEMA}):
        if (method, path) in OPEN or (method, path) in DEVICE_ROUTES or path in ("/predict", "/predict_dual",
                                                                                  "/v1/taxonomy"):
            continue
        need = _required(method, path)
        for role, key in gw.keys.items():
            r = _call(gw, method, path, {"Authorization": f"Bearer {key}"})
            if RANK[role] < RANK[need] and path in ("/", "/enhance"):  # a page: to the sign-in page
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (role, path)
            elif RANK[role] < RANK[need]:
                assert r.status_code == 403 and r.json()["code"] == "forbidden", (role, method, path, r.status_code)
            else:
                assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text[:200])
        checked += 1
    assert checked > 30


def test_device_routes_take_device_keys_only(gw):
    for method, path in DEVICE_ROUTES:
        for key in gw.keys.values():  # no principal acts as a device, admin included
            assert _call(gw, method, path, {"Authorization": f"Bearer {key}"}).status_code == 401
        assert _call(gw, method, path, gw.device).status_code not in (401, 403)
    assert _call(gw, "GET", "/v1/taxonomy", gw.device).status_code == 200
    assert _call(gw, "GET", "/v1/taxonomy", {"Authorization": f"Bearer {gw.keys['viewer']}"}).status_code == 200
    # a device key opens nothing a person reads
    assert _call(gw, "GET", "/api/inspections", gw.device).status_code == 401


def test_bare_wrong_and_revoked_keys_are_refused(gw):
    assert _call(gw, "GET", "/api/inspections", {"Authorization": TOKEN}).status_code == 401  # no "Bearer"
    assert _call(gw, "GET", "/api/inspections", {"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    forged = gw.keys["viewer"].split(".")[0] + ".forged"
    assert _call(gw, "GET", "/api/inspections", {"Authorization": f"Bearer {forged}"}).status_code == 401
    admin = {"Authorization": f"Bearer {TOKEN}"}
    made = httpx.post(f"{gw.url}/admin/principals", headers=admin, json={"name": "leaver", "role": "viewer"}).json()
    key = {"Authorization": f"Bearer {made['api_key']}"}
    assert _call(gw, "GET", "/api/inspections", key).status_code == 200
    listed = httpx.get(f"{gw.url}/admin/principals", headers=admin).json()
    assert any(p["id"] == made["id"] for p in listed) and all("api_key" not in p for p in listed)
    assert httpx.delete(f"{gw.url}/admin/principals/{made['id']}", headers=admin).status_code == 200
    assert _call(gw, "GET", "/api/inspections", key).status_code == 401
    assert _call(gw, "GET", "/metrics", {"Authorization": "Bearer scrape-token-for-tests"}).status_code == 200


def test_login_sets_a_strict_httponly_session_and_never_redirects_off_site(gw):
    with httpx.Client(base_url=gw.url, follow_redirects=False) as c:
        r = c.post("/login", data={"key": gw.keys["viewer"], "next": "//evil.example/x"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/").status_code == 200 and c.get("/api/statistics").status_code == 200
        assert c.get("/enhance").status_code == 303  # a viewer is not an operator
        assert c.post("/api/v1/jobs", data={"source_dir": "/tmp"}).status_code == 403
        # a change on the strength of the cookie must come from this site's pages
        evil = {"Origin": "https://evil.example"}
        r = c.post("/api/v1/jobs", data={"source_dir": "/tmp"}, headers=evil)
        assert r.status_code == 403 and r.json()["code"] == "cross_origin"
        assert c.post("/api/v1/jobs", data={"source_dir": "/tmp"}, headers={"Origin": "null"}).status_code == 403
        host = gw.url.split("//", 1)[1]
        r = c.post("/api/v1/jobs", data={"source_dir": "/tmp"}, headers={"Origin": f"http://{host}"})
        assert r.json().get("code") != "cross_origin"
        assert c.get("/api/statistics", headers=evil).status_code == 200  # reading changes nothing
        assert c.post("/logout").status_code == 303
    r = httpx.post(f"{gw.url}/login", data={"key": gw.keys["viewer"]}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers  # no login CSRF either
    # a key in the header is no ambient credential: no Origin rule for it
    r = httpx.get(f"{gw.url}/api/statistics", headers={"Authorization": f"Bearer {gw.keys['viewer']}",
                                                        "Origin": "https://evil.example"})
    assert r.status_code == 200
    bad = httpx.post(f"{gw.url}/login", data={"key": "nope.nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"


def test_principals_through_the_cli(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "gateway.principals_admin", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    made = cli("create", "--name", "winforms", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    pid = made.stdout.split()[0]
    assert "key (shown once):" in made.stdout
    assert pid in cli("list").stdout and "enabled" in cli("list").stdout
    assert cli("revoke", pid).returncode == 0 and "revoked" in cli("list").stdout


@pytest.mark.parametrize("value", ["change-me", "CHANGE-ME-admin-token", "changeme", "secret", "admin"])
def test_placeholder_secrets_refuse_to_start(value, monkeypatch, tmp_path):
    """Through ``create_app()``, as the server starts it, for every secret setting; the
    same settings with random values start."""
    from gateway.core.security import SECRET_SETTINGS
    from gateway.main import create_app
    from settings.environment import get_settings

    # every field that holds a secret is one the check knows (a new token must join the list)
    secrets_named = {f for f in Settings.model_fields
                     if any(w in f for w in ("token", "secret", "key", "password")) and not f.endswith("_file")}
    assert secrets_named == set(SECRET_SETTINGS)
    for k, v in {"DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "OUTBOX_PATH": str(tmp_path / "o.db"),
                 "TRITON_URL": "127.0.0.1:1", "AUTH_MODE": "on"}.items():
        monkeypatch.setenv(k, v)
    good = {name.upper(): f"random-{i}-Xq8vT2pLm4" for i, name in enumerate(SECRET_SETTINGS)}
    try:
        for name in SECRET_SETTINGS:
            for k, v in {**good, name.upper(): value}.items():
                monkeypatch.setenv(k, v)
            get_settings.cache_clear()
            with pytest.raises(ValueError, match=f"{name.upper()}=.* is a placeholder"):
                create_app()
        for k, v in good.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        assert create_app() is not None
        with pytest.raises(ValueError, match="placeholder"):  # the check itself, without the app
            check_settings(Settings(admin_token=value))
    finally:
        get_settings.cache_clear()


def test_auth_off_is_logged_loudly_and_failed_keys_are_rate_limited(monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from settings.environment import get_settings

    for k, v in {"DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "OUTBOX_PATH": str(tmp_path / "o.db"),
                 "AUTH_MODE": "off", "TRITON_URL": "127.0.0.1:1"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        import logging

        from gateway.main import create_app

        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())
        logging.getLogger("gateway.security").addHandler(handler)
        try:
            app = create_app()
        finally:
            logging.getLogger("gateway.security").removeHandler(handler)
        assert sum("AUTH_MODE=off: EVERY ROUTE IS OPEN" in m for m in seen) >= 3
        monkeypatch.setenv("AUTH_MODE", "on")
        monkeypatch.setenv("AUTH_FAIL_RATE", "5/minute")
        monkeypatch.setenv("ADMIN_TOKEN", "rate-limit-admin")
        get_settings.cache_clear()
        with TestClient(create_app()) as c:
            codes = [c.get("/api/inspections", headers={"Authorization": "Bearer wrong.key"}).status_code
                     for _ in range(8)]
            assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
            r = c.get("/api/inspections", headers={"Authorization": "Bearer wrong.key"})
            assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
            # the budget is per (address, claimed key id): guessing "wrong.*" is slowed down,
            # others behind the same address (a NAT) still get in
            assert c.get("/api/inspections", headers={"Authorization": "Bearer rate-limit-admin"}).status_code == 200
            # the sign-in form is a key check like any other: after the budget, even the right key is 429
            login = {"origin": str(c.base_url)}
            codes = [c.post("/login", data={"key": "guess.x"}, headers=login, follow_redirects=False).status_code
                     for _ in range(6)]
            assert codes[:5] == [401] * 5 and codes[5] == 429
            assert c.post("/login", data={"key": "guess.right-one"}, headers=login,
                          follow_redirects=False).status_code == 429
        monkeypatch.setenv("AUTH_FAIL_RATE", "100/minute")
        monkeypatch.setenv("AUTH_FAIL_ADDR_RATE", "6/minute")
        get_settings.cache_clear()
        with TestClient(create_app()) as c:
            # a new claimed id for every guess still spends the address's own budget
            codes = [c.get("/api/inspections", headers={"Authorization": f"Bearer id{i}.key"}).status_code
                     for i in range(8)]
            assert codes[:6] == [401] * 6 and codes[6:] == [429] * 2
            assert c.get("/api/inspections", headers={"Authorization": "Bearer rate-limit-admin"}).status_code == 429
        del app
    finally:
        get_settings.cache_clear()


def test_seed_routes_need_a_device_key_or_an_allowed_network(triton, tmp_path):
    import base64
    import time

    from pcb.synthetic import render_board
    from tests.conftest import encode

    frame = base64.b64encode(encode(render_board(3).image)).decode()
    env = {"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
           "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_POLICY": "none", "ADMIN_TOKEN": TOKEN,
           "SEED_COMPAT": "true", "SEED_COMPAT_ALLOW_NETS": "10.9.0.0/16", "SEED_COMPAT_RATE": "3/second"}
    srv = GatewayServer(env, tmp_path / "seed.log").start()
    try:
        r = httpx.post(f"{srv.url}/predict", json={"frame": frame}, timeout=30)
        assert r.status_code == 401  # 127.0.0.1 is not in the allowed networks
        key = httpx.post(f"{srv.url}/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"device_id": "seed-pi", "side": "left", "drives_gpio": True}).json()["api_key"]
        dev = {"X-Device-Id": "seed-pi", "X-API-Key": key}
        codes = [httpx.post(f"{srv.url}/predict", json={"frame": frame}, headers=dev, timeout=30).status_code
                 for _ in range(6)]
        assert codes[0] == 200 and 429 in codes  # a device key works; the rate limit holds
        # /predict_dual: the same rules, the same per-address budget
        dual = {"frame_left": frame, "frame_right": frame}
        time.sleep(1.2)  # a fresh second of SEED_COMPAT_RATE
        r = httpx.post(f"{srv.url}/predict_dual", json=dual, timeout=30)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"  # no key, not an allowed network
        wrong = {**dev, "X-API-Key": key + "x"}
        assert httpx.post(f"{srv.url}/predict_dual", json=dual, headers=wrong, timeout=30).status_code == 401
        r = httpx.post(f"{srv.url}/predict_dual", json=dual, headers=dev, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text  # a device key works
        codes = [httpx.post(f"{srv.url}/predict_dual", json=dual, timeout=30).status_code for _ in range(4)]
        assert 429 in codes, codes  # counted before the key is looked at: anonymous floods are limited too
        r = httpx.post(f"{srv.url}/predict_dual", json=dual, headers=dev, timeout=30)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1  # one budget per address, key or not
    finally:
        srv.stop()
    srv = GatewayServer({**env, "SEED_COMPAT_ALLOW_NETS": "127.0.0.0/8"}, tmp_path / "seed2.log").start()
    try:
        r = httpx.post(f"{srv.url}/predict", json={"frame": frame}, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ok"  # the seed's own script, from its network
        r = httpx.post(f"{srv.url}/predict_dual", json={"frame_left": frame, "frame_right": frame}, timeout=30)
        assert r.status_code == 200 and r.json()["gpio_signal"] is not None  # as the configured seed devices
    finally:
        srv.stop()


def test_event_streams_are_bounded_per_caller(gw):
    import contextlib

    key = {"Authorization": f"Bearer {gw.keys['viewer']}"}
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(httpx.stream("GET", f"{gw.url}/api/live", headers=key, timeout=30))
                  for _ in range(3)]
        assert all(r.status_code == 200 for r in opened)
        extra = httpx.get(f"{gw.url}/api/live", headers=key, timeout=30)
        assert extra.status_code == 429 and extra.json()["code"] == "too_many_streams"
        other = {"Authorization": f"Bearer {gw.keys['operator']}"}  # another caller has its own
        with httpx.stream("GET", f"{gw.url}/api/live", headers=other, timeout=30) as r:
            assert r.status_code == 200
    with httpx.stream("GET", f"{gw.url}/api/live", headers=key, timeout=30) as r:  # closed ones are given back
        assert r.status_code == 200


def test_uploads_are_refused_before_their_body_is_read(gw):
    """An anonymous 50 MB upload to the batch API is answered 401 at once: the gateway never
    reads (or spools) it."""
    import socket

    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 52428800\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"files\"; "
                     b"filename=\"a.jpg\"\r\n\r\n")
        sock.settimeout(10)
        answer = sock.recv(4096)  # arrives although 50 MB are still to come
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_hostile_cookies_and_stream_spellings(gw):
    bad = httpx.get(f"{gw.url}/api/statistics", headers={"Cookie": "pcb_session=a.9999999999.\u00e9".encode()})
    assert bad.status_code == 401  # never a 500
    with httpx.Client(base_url=gw.url) as c:
        c.post("/login", data={"key": gw.keys["viewer"]})
        session = c.cookies.get("pcb_session")
    import contextlib

    spellings = [f"pcb_session={session}", f"x=1; pcb_session={session}", f"pcb_session=\"{session}\""]
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(httpx.stream("GET", f"{gw.url}/api/live", headers={"Cookie": c}, timeout=30))
                  for c in spellings]
        assert [r.status_code for r in opened] == [200, 200, 200]
        r = httpx.get(f"{gw.url}/api/live", headers={"Cookie": f"y=2; pcb_session={session}"}, timeout=30)
        assert r.status_code == 429  # one caller, however the cookie is spelled


def test_a_revoked_key_ends_on_every_worker_within_a_housekeeping_round(gw):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    made = httpx.post(f"{gw.url}/admin/principals", headers=admin, json={"name": "cli-leaver", "role": "viewer"}).json()
    key = {"Authorization": f"Bearer {made['api_key']}"}
    assert _call(gw, "GET", "/api/statistics", key).status_code == 200
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{gw.db}"}
    out = subprocess.run([sys.executable, "-m", "gateway.principals_admin", "revoke", made["id"]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import time

    deadline = time.monotonic() + 12  # housekeeping refreshes every 5 s
    while _call(gw, "GET", "/api/statistics", key).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _call(gw, "GET", "/api/statistics", key).status_code == 401


def test_batch_job_keys_are_scoped_per_submitter(gw):
    """The same Idempotency-Key from two principals names two jobs; from one, one job."""
    from pcb.synthetic import render_board
    from tests.conftest import encode

    files = [("files", ("a.jpg", encode(render_board(5).image), "image/jpeg"))]
    ids = []
    for role in ("operator", "admin", "operator"):
        r = httpx.post(f"{gw.url}/api/v1/jobs", files=files, timeout=30,
                       headers={"Authorization": f"Bearer {gw.keys[role]}", "Idempotency-Key": "lot-1"})
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["job_id"])
    assert ids[0] == ids[2] != ids[1]


def test_origin_rule_knows_the_public_origin_behind_a_proxy(monkeypatch):
    """A proxy that rewrites Host (nginx's default $proxy_host) would make every signed-in
    change look cross-site: PUBLIC_ORIGINS names the origin the browser really uses."""
    from starlette.requests import Request

    from gateway.core.errors import ApiError
    from gateway.core.security import check_origin
    from settings.environment import get_settings

    def request(origin: str, host: str = "gateway:8080", method: str = "POST") -> Request:
        return Request({"type": "http", "method": method, "path": "/", "query_string": b"",
                        "headers": [(b"host", host.encode()), (b"origin", origin.encode())]})

    monkeypatch.setenv("PUBLIC_ORIGINS", "https://gateway.line1.plant, https://[fd00::5]:8443")
    get_settings.cache_clear()
    try:
        check_origin(request("https://gateway.line1.plant"))
        check_origin(request("https://[fd00::5]:8443"))
        check_origin(request("http://gateway:8080"))
        check_origin(request("https://evil.example", method="GET"))  # reading changes nothing
        for bad in ("https://evil.example", "null", "https://gateway.line1.plant.evil.example"):
            with pytest.raises(ApiError) as e:
                check_origin(request(bad))
            assert e.value.code == "cross_origin"
    finally:
        monkeypatch.delenv("PUBLIC_ORIGINS")
        get_settings.cache_clear()


def test_devices_share_the_limits_limiter_with_burst_and_rate(monkeypatch):
    """RATE_LIMIT_BURST at once, then 429 with Retry-After; per device; rate 0 switches it off."""
    import uuid

    from gateway.core.errors import RateLimited
    from gateway.core.security import limit_device
    from settings.environment import get_settings

    monkeypatch.setenv("RATE_LIMIT_PER_S", "2")
    monkeypatch.setenv("RATE_LIMIT_BURST", "5")
    get_settings.cache_clear()
    try:
        dev, other = f"unit-{uuid.uuid4().hex}", f"unit-{uuid.uuid4().hex}"
        for _ in range(6):  # the window: 5 / 2 per s, rounded up to 3 s, holds 2 x 3 = 6 > BURST
            limit_device(dev)
        with pytest.raises(RateLimited) as e:
            limit_device(dev)
        assert 1 <= int(e.value.headers["Retry-After"]) <= 3
        limit_device(other)  # another device has its own budget
        monkeypatch.setenv("RATE_LIMIT_PER_S", "30")
        monkeypatch.setenv("RATE_LIMIT_BURST", "10")
        get_settings.cache_clear()
        fast = f"unit-{uuid.uuid4().hex}"
        for _ in range(30):  # a burst below the rate never cuts the sustained rate: 30 in 1 s
            limit_device(fast)
        with pytest.raises(RateLimited):
            limit_device(fast)
        monkeypatch.setenv("RATE_LIMIT_PER_S", "0")
        get_settings.cache_clear()
        for _ in range(20):
            limit_device(dev)
    finally:
        get_settings.cache_clear()


GUESS_ADMIN = {"Authorization": "Bearer concurrent-guess-admin"}


@contextlib.asynccontextmanager
async def _in_process_gateway(monkeypatch, tmp_path):
    """The real app in this process (its lifespan run), a 5/minute guessing budget, and a
    client whose requests run concurrently on this event loop."""
    from settings.environment import get_settings

    for k, v in {"DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "OUTBOX_PATH": str(tmp_path / "o.db"),
                 "TRITON_URL": "127.0.0.1:1", "ADMIN_TOKEN": "concurrent-guess-admin",
                 "AUTH_FAIL_RATE": "5/minute", "AUTH_FAIL_ADDR_RATE": "1000/minute"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        from gateway.main import create_app

        app = create_app()
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                yield c
    finally:
        get_settings.cache_clear()


async def test_concurrent_guesses_spend_the_guessing_budget_one_by_one(monkeypatch, tmp_path):
    """A device key unknown in memory is checked off the event loop (it may reload the
    registry from the database); the budget check, the in-memory check and the failure's
    count run with no await between them, so a burst of concurrent guesses cannot all pass
    the budget before any of them is counted: a right key inside the burst meets the 429."""
    async with _in_process_gateway(monkeypatch, tmp_path) as c:
        key = (await c.post("/admin/devices", headers=GUESS_ADMIN,
                            json={"device_id": "pi-guessed", "side": "left"})).json()["api_key"]
        guesses = [f"guess-{i}" for i in range(30)]
        guesses[20] = key  # a right guess in the burst, behind 20 wrong ones
        answers = await asyncio.gather(*(c.post("/v1/heartbeat", headers={
            "X-Device-Id": "pi-guessed", "X-API-Key": g}) for g in guesses))
    codes = [r.status_code for r in answers]
    assert codes.count(401) == 5 and codes[20] == 429, codes


async def test_concurrent_guesses_at_a_principal_key_are_counted_one_by_one(monkeypatch, tmp_path):
    """The same for principals' keys on every role-guarded route (``authorize`` on the loop)."""
    async with _in_process_gateway(monkeypatch, tmp_path) as c:
        key = (await c.post("/admin/principals", headers=GUESS_ADMIN,
                            json={"name": "guessed", "role": "viewer"})).json()["api_key"]
        pid = key.split(".", 1)[0]
        guesses = [f"{pid}.guess-{i}" for i in range(30)]
        guesses[20] = key
        answers = await asyncio.gather(*(c.get("/v1/taxonomy", headers={"Authorization": f"Bearer {g}"})
                                         for g in guesses))
        alone = await c.get("/v1/taxonomy", headers={"Authorization": f"Bearer {key}"})
    codes = [r.status_code for r in answers]
    assert codes.count(401) == 5 and codes[20] == 429, codes
    assert alone.status_code == 429  # the budget holds for the minute, right key or not


async def test_each_principal_is_rate_limited(monkeypatch, tmp_path):
    """``PRINCIPAL_RATE`` per principal, whatever address it comes from; another principal
    keeps its own budget."""
    monkeypatch.setenv("PRINCIPAL_RATE", "3/minute")
    async with _in_process_gateway(monkeypatch, tmp_path) as c:
        keys = [(await c.post("/admin/principals", headers=GUESS_ADMIN,
                              json={"name": f"busy-{i}", "role": "viewer"})).json()["api_key"] for i in range(2)]
        first = [(await c.get("/v1/taxonomy", headers={"Authorization": f"Bearer {keys[0]}"})).status_code
                 for _ in range(4)]
        other = await c.get("/v1/taxonomy", headers={"Authorization": f"Bearer {keys[1]}"})
    assert first == [200, 200, 200, 429] and other.status_code == 200

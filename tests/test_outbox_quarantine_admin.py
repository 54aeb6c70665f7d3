"""The outbox's quarantine as an operator meets it, against a real gateway process on the
machine's MariaDB: rows the database refuses (a board id longer than its column) are set
aside by the gateway's own drainer, shown by ``GET /admin/outbox/quarantine``, by the
``gateway_outbox_quarantined`` gauge and by ``python -m gateway.outbox_admin list``; after
the cause is removed (the column widened) ``POST /admin/outbox/quarantine/retry`` and
``outbox_admin retry`` send them back, and each is written exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select, text

from gateway.services.outbox import Outbox
from store.models import Inspection
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, fresh_mariadb
from tests.gateway_server import GatewayServer

TOKEN = "quarantine-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
TOO_LONG = "X" * 100  # the column holds 64: MariaDB (strict mode) refuses the row


def _row(board: str) -> tuple[str, dict]:
    iid = str(uuid.uuid4())
    return iid, {"id": iid, "board_id": board, "device_id": "pi-1", "camera_side": "left", "verdict": "normal",
                 "verdict_code": 0, "confidence": 1.0, "boxes": [], "gpio_pin": 23, "gpio_duration_ms": 300,
                 "model_version": 1, "latency_ms": 1.0, "created_at": "2026-12-01T10:00:00"}


def _until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


@pytest.fixture
def gateway(tmp_path):
    with fresh_mariadb() as name:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
        outbox = tmp_path / "o.db"
        srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": url, "OUTBOX_PATH": str(outbox),
                             "IMAGE_DIR": str(tmp_path / "img"), "ADMIN_TOKEN": TOKEN, "RATE_LIMIT_PER_S": "0",
                             "BATCH_DATA_DIR": str(tmp_path / "batch")}, tmp_path / "gw.log").start()
        engine = make_engine(url)
        try:
            yield srv, outbox, engine
        finally:
            srv.stop()
            engine.dispose()


def _written(engine, iid: str) -> int:
    with make_sessionmaker(engine)() as s:
        return s.scalar(select(func.count()).select_from(Inspection).where(Inspection.id == iid))


def _gauge(srv: GatewayServer) -> float:
    r = httpx.get(f"{srv.url}/metrics", headers=ADMIN)
    assert r.status_code == 200, r.text
    m = re.search(r"^gateway_outbox_quarantined (\S+)$", r.text, re.M)
    assert m, "gateway_outbox_quarantined not exported"
    return float(m.group(1))


def _error_events(srv: GatewayServer) -> list[dict]:
    return httpx.get(f"{srv.url}/api/system-logs", params={"level": "error"}, headers=ADMIN).json()["items"]


def _cli(outbox, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.outbox_admin", "--outbox", str(outbox), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quarantined_rows_are_listed_counted_and_retried_once_after_the_fix(gateway):
    srv, outbox, engine = gateway
    box = Outbox(outbox)  # the gateway's own file: rows put here are drained by its drainer
    good_id, good = _row("Q-OK")
    a_id, a = _row(TOO_LONG)
    b_id, b = _row(TOO_LONG)
    for iid, payload in ((a_id, a), (good_id, good), (b_id, b)):
        box.put(iid, "inspection", payload)

    _until(lambda: box.quarantine_depth() == 2, 60, "the refused rows were not quarantined")
    assert _written(engine, good_id) == 1  # a poison row never blocks the others

    assert httpx.get(f"{srv.url}/admin/outbox/quarantine").status_code == 401  # an admin's business
    page = httpx.get(f"{srv.url}/admin/outbox/quarantine", headers=ADMIN).json()
    assert page["total"] == 2 and {r["id"] for r in page["rows"]} == {a_id, b_id}
    assert all(r["attempts"] == 5 and "Data too long" in r["last_error"] for r in page["rows"]), page
    _until(lambda: _gauge(srv) == 2, 10, "the gauge never showed the quarantine")
    listed = [json.loads(line) for line in _cli(outbox, "list").splitlines()]
    assert {r["id"] for r in listed} == {a_id, b_id} and all(r["kind"] == "inspection" for r in listed)
    _until(lambda: any(a_id in e["message"] and "quarantined" in e["message"] for e in _error_events(srv)), 10,
           "no error event for the operator")

    with engine.begin() as c:  # the fix: the column is widened
        c.execute(text("ALTER TABLE inspections MODIFY board_id VARCHAR(255) NOT NULL"))

    r = httpx.post(f"{srv.url}/admin/outbox/quarantine/retry", headers=ADMIN, json={"ids": [a_id]})
    assert r.status_code == 200 and r.json() == {"requeued": 1}
    _until(lambda: _written(engine, a_id) == 1, 30, "the row sent back over HTTP was not written")
    assert _written(engine, b_id) == 0 and box.quarantine_depth() == 1  # only the one asked for
    assert _cli(outbox, "retry").strip() == "1 rows sent back to the outbox"
    _until(lambda: _written(engine, b_id) == 1, 30, "the row sent back by the CLI was not written")

    assert httpx.get(f"{srv.url}/admin/outbox/quarantine", headers=ADMIN).json() == {"total": 0, "rows": []}
    assert _cli(outbox, "list") == ""
    _until(lambda: _gauge(srv) == 0, 10, "the gauge stayed up after the retry")
    # retrying again sends nothing: each row is in the database once
    assert httpx.post(f"{srv.url}/admin/outbox/quarantine/retry", headers=ADMIN, json={}).json() == {"requeued": 0}
    time.sleep(1.5)  # three drainer rounds
    assert (_written(engine, a_id), _written(engine, b_id), _written(engine, good_id)) == (1, 1, 1)
    assert box.depth() == 0

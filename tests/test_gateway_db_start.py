"""The line starts without the database: a gateway (re)started during a MariaDB outage
answers at once, authenticates its devices from the local snapshot, inspects into the
outbox, and migrates and drains when the database is back. Two workers starting on a
fresh database migrate it once (a lock), never racing each other."""

from __future__ import annotations

import time

import httpx
import pymysql

from pcb.synthetic import render_board
from tests.conftest import encode
from tests.gateway_server import GatewayServer


def test_gateway_starts_and_inspects_during_a_database_outage(triton, mariadb, tmp_path):
    proxy, url = mariadb
    env = {"TRITON_URL": triton.grpc_url, "DATABASE_URL": url, "OUTBOX_PATH": str(tmp_path / "o.db"),
           "IMAGE_POLICY": "none", "ADMIN_TOKEN": "db-admin"}
    first = GatewayServer(env, tmp_path / "gw1.log", workers=2).start()  # fresh database, two workers
    try:
        key = httpx.post(f"{first.url}/admin/devices", headers={"Authorization": "Bearer db-admin"},
                         json={"device_id": "pi-right", "side": "right"}).json()["api_key"]
    finally:
        first.stop()
    log1 = (tmp_path / "gw1.log").read_text()
    assert "already exists" not in log1 and "database not ready" not in log1  # one migration, no race

    proxy.cut()  # the database goes away; the gateway restarts meanwhile
    t0 = time.monotonic()
    srv = GatewayServer(env, tmp_path / "gw2.log").start(timeout=60)
    started_s = time.monotonic() - t0
    try:
        img = encode(render_board(2).image)
        r = httpx.post(f"{srv.url}/v1/inspect", headers={"X-Device-Id": "pi-right", "X-API-Key": key},
                       files={"image": ("b.jpg", img, "image/jpeg")}, data={"board_id": "DBSTART-1"}, timeout=30)
        answered_s = time.monotonic() - t0
        assert r.status_code == 200, r.text  # the device is known from the local snapshot
        admin = {"Authorization": "Bearer db-admin"}
        assert httpx.get(f"{srv.url}/api/inspections", headers=admin).status_code == 503
        proxy.restore()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            page = httpx.get(f"{srv.url}/api/inspections", headers=admin)
            if page.status_code == 200 and page.json()["total"] == 1:
                break
            time.sleep(0.5)
        assert page.status_code == 200 and page.json()["items"][0]["board_id"] == "DBSTART-1", page.text
        print(f"gateway up {started_s:.1f} s after its start during the outage, first answer at {answered_s:.1f} s")
        assert started_s < 20  # the seconds of a process start, not a wait for the database
    finally:
        srv.stop()
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=url.rsplit("/", 1)[1],
                           autocommit=True)
    try:
        with conn.cursor() as c:
            c.execute("SELECT version_num FROM alembic_version")
            assert c.fetchone()[0] == _head()  # migrated to the newest schema once it was back
    finally:
        conn.close()  # an open transaction would block the fixture's DROP DATABASE


def _head() -> str:
    from alembic.script import ScriptDirectory

    from store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

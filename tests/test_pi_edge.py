"""Two simulated edges (synthetic boards, mock GPIO pins) against the real gateway and
Triton: every board fused once, one pulse per board on the left, none on the right."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from pi_edge.capture import SyntheticBoards
from pi_edge.config import EdgeConfig
from pi_edge.edge import Edge
from tests.gateway_server import GatewayServer

TOKEN = "edge-admin"
PINS = {"normal": (23, 300), "component_defect": (17, 500), "solder_defect": (27, 500), "discard": (22, 500)}


@pytest.fixture
def line(triton, tmp_path):
    srv = GatewayServer({"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                         "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_POLICY": "none", "ADMIN_TOKEN": TOKEN,
                         "PAIRING_WINDOW_MS": "3000"}, tmp_path / "gw.log").start()
    keys = {}
    for dev, side, gpio in (("pi-1", "left", True), ("pi-2", "right", False)):
        keys[dev] = httpx.post(f"{srv.url}/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                               json={"device_id": dev, "side": side, "drives_gpio": gpio}).json()["api_key"]
    try:
        yield srv, keys, tmp_path
    finally:
        srv.stop()


def _edge(srv, keys, tmp, dev, side, n, session):
    cfg = EdgeConfig(gateway_url=srv.url, device_id=dev, api_key=keys[dev], side=side, drives_gpio=side == "left",
                     fps=4, source="synthetic", spool_dir=str(tmp / f"spool-{dev}"), gpio_driver="mock",
                     heartbeat_s=0.5)
    return Edge(cfg, SyntheticBoards(side, 640, 480, count=n), session=session)


def test_pair_of_edges_one_pulse_per_board(line):
    srv, keys, tmp = line
    n = 6
    left = _edge(srv, keys, tmp, "pi-1", "left", n, "S1")
    right = _edge(srv, keys, tmp, "pi-2", "right", n, "S1")

    async def both():
        await asyncio.gather(left.run(n), right.run(n))

    try:
        asyncio.run(both())
        assert len(left.results) == n and len(right.results) == n
        assert right.gpio is None and all(r["gpio"] is None for r in right.results)
        pulses = left.gpio.pulses
        assert len(pulses) == n
        for (_, pin, ms), r in zip(pulses, left.results):
            assert r["board"]["pairing"] == "paired"
            assert (pin, ms) == PINS[r["board"]["verdict"]["code"]]
        time.sleep(1.0)  # let the outbox drain
        db = sqlite3.connect(tmp / "g.db")
        decisions = db.execute("SELECT COUNT(DISTINCT board_id), COUNT(*) FROM inspections "
                               "WHERE gpio_pin IS NOT NULL").fetchone()
        assert decisions == (n, n)
    finally:
        left.close()
        right.close()

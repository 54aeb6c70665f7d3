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
PINS = {"normal": (23, 300), "review": (24, 400), "component_defect": (17, 500), "solder_defect": (27, 500),
        "discard": (22, 500)}


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
    left.cfg.overlay, left.cfg.overlay_dir = "save", str(tmp / "overlay")  # local boxes, saved

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
        assert len(list((tmp / "overlay").glob("*.jpg"))) == n
    finally:
        left.close()
        right.close()


def test_gateway_restart_mid_run_spools_and_replays(line):
    """The gateway process is stopped mid-run and started again: frames captured in the gap
    are spooled, replayed in order, and every side of every board is stored exactly once."""
    import threading

    srv, keys, tmp = line
    n = 12
    left = _edge(srv, keys, tmp, "pi-1", "left", n, "S2")
    right = _edge(srv, keys, tmp, "pi-2", "right", n, "S2")

    def outage():
        time.sleep(1.2)
        srv.stop()
        time.sleep(2.0)
        srv.start()

    t = threading.Thread(target=outage)
    t.start()

    async def both():
        await asyncio.gather(left.run(n), right.run(n))

    try:
        asyncio.run(both())
        t.join()
        assert left.sender.stats.spooled + right.sender.stats.spooled > 0, "the outage spooled nothing"
        assert left.sender.stats.replayed + right.sender.stats.replayed == (
            left.sender.stats.spooled + right.sender.stats.spooled)
        assert len(left.spool) == len(right.spool) == 0
        # boards replayed after the outage are records: no pairing, no pulse, none fired
        assert len(left.gpio.pulses) + left.late_verdicts == len([r for r in left.results if r["gpio"]])
        time.sleep(1.5)  # outbox -> database
        db = sqlite3.connect(tmp / "g.db")
        rows = db.execute("SELECT board_id, camera_side, COUNT(*) FROM inspections WHERE board_id LIKE '%-S2-%' "
                          "GROUP BY board_id, camera_side").fetchall()
        assert len(rows) == 2 * n and all(c == 1 for _, _, c in rows), rows
        replays = db.execute("SELECT COUNT(*), COUNT(gpio_pin) FROM inspections WHERE pairing = 'replay' "
                             "AND board_id LIKE '%-S2-%'").fetchone()
        assert 0 < replays[0] <= left.sender.stats.replayed + right.sender.stats.replayed and replays[1] == 0
    finally:
        left.close()
        right.close()


def _run_watching_in_flight(edge: Edge, frames: int) -> int:
    """Run the edge for ``frames``; the most requests its sender had on the wire at once."""
    peak = [0]

    async def run():
        async def watch():
            while True:
                peak.append(len(edge.sender._tasks))
                await asyncio.sleep(0.01)

        w = asyncio.create_task(watch())
        await edge.run(frames)
        w.cancel()

    asyncio.run(run())
    return max(peak)


def test_slow_gateway_skips_frames_with_bounded_in_flight(line):
    """Responses delayed by a slow link: the edge keeps at most max_in_flight requests open,
    skips stale frames (latest wins) and each answered frame stays within a bounded age."""
    from tests.tcp_proxy import TcpProxy

    srv, keys, tmp = line
    proxy = TcpProxy("127.0.0.1", srv.port, delay_s=0.6)
    try:
        cfg = EdgeConfig(gateway_url=f"http://127.0.0.1:{proxy.port}", device_id="pi-2", api_key=keys["pi-2"],
                         side="right", fps=10, source="synthetic", spool_dir=str(tmp / "spool-slow"),
                         max_in_flight=2, timeout_s=5, heartbeat_s=5)
        edge = Edge(cfg, SyntheticBoards("right", 640, 480, count=30), session="S3")
        peak = _run_watching_in_flight(edge, 30)
        st = edge.sender.stats
        assert st.skipped > 0, "nothing was skipped although the gateway lagged"
        assert peak <= edge.sender.in_flight_limit == cfg.max_in_flight
        assert st.answered + st.skipped == 30 and st.spooled == 0
        # bounded: no answered frame older than two request times (timeout + delays)
        assert max(st.latencies_ms) < 2 * (cfg.timeout_s * 1000)
        edge.close()
    finally:
        proxy.close()


def test_no_frame_skipped_while_the_gateway_keeps_within_the_budget(line):
    """A link slow enough that two requests on the wire cannot keep up with 20 frames/s, fast
    enough that every frame is answered within the budget: the depth derived from the budget
    skips none (and stays within it); the old fixed depth of two skips frames."""
    from tests.tcp_proxy import TcpProxy

    srv, keys, tmp = line
    proxy = TcpProxy("127.0.0.1", srv.port, delay_s=0.1)
    try:
        def run(tag: str, **depth):
            cfg = EdgeConfig(gateway_url=f"http://127.0.0.1:{proxy.port}", device_id="pi-2", api_key=keys["pi-2"],
                             side="right", fps=20, latency_budget_ms=400, source="synthetic",
                             spool_dir=str(tmp / f"spool-{tag}"), timeout_s=5, heartbeat_s=5, **depth)
            edge = Edge(cfg, SyntheticBoards("right", 640, 480, count=40), session=f"S-{tag}")
            peak = _run_watching_in_flight(edge, 40)
            edge.close()
            return edge.sender, peak

        sender, peak = run("budget")
        assert sender.in_flight_limit == 8 and peak <= 8
        assert sender.stats.skipped == 0 and sender.stats.answered == 40 and sender.stats.spooled == 0
        fixed, _ = run("fixed", max_in_flight=2)
        assert fixed.stats.skipped > 0 and fixed.stats.answered + fixed.stats.skipped == 40
    finally:
        proxy.close()

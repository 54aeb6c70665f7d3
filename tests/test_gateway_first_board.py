"""A freshly started gateway answers its first inspection about as fast as the later ones:
what the first request would pay for (anyio's backend behind FastAPI's thread pool) is
warmed in the lifespan, before the gateway reports ready (issue 16, lever 4)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from inference.sync import SyncTriton
from pcb.synthetic import render_board
from tests.conftest import encode
from tests.gateway_server import GatewayServer

TOKEN = "first-board-admin"


def _env(triton, tmp_path) -> dict[str, str]:
    return {"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
            "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_POLICY": "none", "ADMIN_TOKEN": TOKEN,
            "RATE_LIMIT_PER_S": "0"}


def test_first_inspect_after_a_start_is_not_much_slower(triton, tmp_path):
    images = [encode(render_board(900 + i).image) for i in range(4)]
    # Triton's own first requests are its models' warm-up's business: this is the gateway's
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            list(pool.map(SyncTriton(triton.grpc_url).inspect, images))
    # the device is registered by an earlier gateway life, so the fresh one has served nothing
    first_life = GatewayServer(_env(triton, tmp_path), tmp_path / "gw0.log").start()
    try:
        key = httpx.post(f"{first_life.url}/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"device_id": "cam-right", "side": "right", "drives_gpio": False}).json()["api_key"]
    finally:
        first_life.stop()
    srv = GatewayServer(_env(triton, tmp_path), tmp_path / "gw.log").start()
    try:
        with httpx.Client(timeout=30) as http:
            def inspect(i: int) -> float:
                t0 = time.perf_counter()
                r = http.post(f"{srv.url}/v1/inspect", data={"board_id": f"FIRST-{i}"},
                              files={"image": ("r.jpg", images[i % len(images)], "image/jpeg")},
                              headers={"X-Device-Id": "cam-right", "X-API-Key": key})
                assert r.status_code == 200, r.text
                return (time.perf_counter() - t0) * 1000

            ms = [inspect(i) for i in range(12)]
    finally:
        srv.stop()
    later = statistics.median(ms[2:])
    # generous: the machine is shared; a lazy start (imports, first connections) costs far more
    assert ms[0] < 3 * later + 50, f"first {ms[0]:.0f} ms, later median {later:.0f} ms: {[round(m) for m in ms]}"

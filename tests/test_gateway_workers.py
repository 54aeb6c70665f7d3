"""Several gateway worker processes sharing pairing state through the machine's Redis:
sides of one board land on different workers and still pair; every board gets exactly one
GPIO command; a device registered through one worker is known to all."""

from __future__ import annotations

import concurrent.futures as cf
import uuid

import httpx
import redis

from pcb.synthetic import render_board
from tests.conftest import encode
from tests.gateway_server import GatewayServer

TOKEN = "workers-admin"


def test_two_workers_pair_through_redis(triton, tmp_path):
    prefix = uuid.uuid4().hex[:6]
    srv = GatewayServer({"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                         "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_POLICY": "none", "ADMIN_TOKEN": TOKEN,
                         "REDIS_URL": "redis://127.0.0.1:6379/0", "PAIRING_WINDOW_MS": "2000"},
                        tmp_path / "gw.log", workers=2).start()
    try:
        admin = {"Authorization": f"Bearer {TOKEN}"}
        keys = {}
        for dev, side, gpio in (("pi-left", "left", True), ("pi-right", "right", False)):
            keys[dev] = httpx.post(f"{srv.url}/admin/devices", headers=admin,
                                   json={"device_id": dev, "side": side, "drives_gpio": gpio}).json()["api_key"]
        imgs = [encode(render_board(700 + i).image) for i in range(4)]

        def post(dev: str, board: str, img: bytes) -> dict:
            # a fresh connection per request so the kernel spreads them over both workers
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.post("/v1/inspect", headers={"X-Device-Id": dev, "X-API-Key": keys[dev]},
                           files={"image": ("i.jpg", img, "image/jpeg")}, data={"board_id": board})
                assert r.status_code == 200, r.text
                return r.json()

        boards = [f"W{prefix}-{i}" for i in range(12)]
        with cf.ThreadPoolExecutor(8) as pool:
            futs = {(b, d): pool.submit(post, d, b, imgs[i % 4])
                    for i, b in enumerate(boards) for d in ("pi-left", "pi-right")}
            results = {k: f.result() for k, f in futs.items()}
        for b in boards:
            left, right = results[(b, "pi-left")], results[(b, "pi-right")]
            assert left["board"]["pairing"] == "paired", (b, left["board"])
            assert left["gpio"] is not None and right["gpio"] is None
        pids = {int(line.split("process [")[1].split("]")[0]) for line in (tmp_path / "gw.log").read_text().splitlines()
                if "Started server process" in line}
        assert len(pids) == 2
    finally:
        srv.stop()
        r = redis.Redis()
        for k in r.scan_iter(f"pcb:*W{prefix}-*"):
            r.delete(k)

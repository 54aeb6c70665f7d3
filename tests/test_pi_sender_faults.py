"""The edge sender against a misbehaving gateway (a small real HTTP server on loopback that
injects the faults): a frame the gateway keeps failing with a 500 is set aside after a few
replays instead of blocking the spool, a 500 does not take the edge offline, and a refused
``captured_at`` (the Pi's clock is off) still gets the board its verdict."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pi_edge.config import EdgeConfig
from pi_edge.sender import Frame, Sender
from pi_edge.spool import Spool

ANSWER = {"verdict": {"code": "normal"}, "gpio": None, "board": {}}


class FaultyGateway(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/heartbeat":
            return self._reply(200, {})
        self.seen.append(body)
        if b"poison" in body:
            return self._reply(500, {"code": "internal_error", "message": "a bug"})
        if b'name="captured_at"' in body:
            return self._reply(422, {"code": "invalid_captured_at", "message": "clock"})
        return self._reply(200, ANSWER)


@pytest.fixture
def gateway():
    FaultyGateway.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FaultyGateway)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _sender(url, tmp_path) -> Sender:
    cfg = EdgeConfig(gateway_url=url, retries=1, backoff_base_s=0.01, backoff_max_s=0.02, replay_rate_per_s=0,
                     spool_dir=str(tmp_path / "spool"))
    return Sender(cfg, Spool(cfg.spool_dir))


def test_a_poison_frame_is_set_aside_and_the_spool_moves_on(gateway, tmp_path):
    sender = _sender(gateway, tmp_path)

    async def go():
        sender.spool.put(b"poison", {"board_id": "B-poison", "captured_at": 1.0, "idempotency_key": "k0"})
        for i in range(3):
            sender.spool.put(b"ok", {"board_id": f"B-{i}", "captured_at": 1.0, "idempotency_key": f"k{i + 1}"})
        for _ in range(5):
            await sender.replay()
        await sender.client.aclose()

    asyncio.run(go())
    assert len(sender.spool) == 0 and sender.stats.replayed == 3
    assert len(list((tmp_path / "spool" / "dead").glob("*.jpg"))) == 1  # kept for an operator
    assert sender.online  # a 500 is about the frame, not an outage


def test_a_refused_captured_at_still_gets_the_verdict(gateway, tmp_path):
    sender = _sender(gateway, tmp_path)
    got = []
    sender.on_result = lambda frame, result: got.append(result)

    async def go():
        ok = await sender._send(Frame(b"jpeg", "B-1", 123.0, "k"))
        await sender.client.aclose()
        return ok

    assert asyncio.run(go()) and got == [ANSWER]
    assert b'name="captured_at"' not in FaultyGateway.seen[-1]


def test_a_live_frame_answered_500_is_spooled_and_the_edge_stays_online(gateway, tmp_path):
    sender = _sender(gateway, tmp_path)

    async def go():
        ok = await sender._send(Frame(b"poison", "B-live", 1.0, "k-live"))
        await sender.client.aclose()
        return ok

    assert asyncio.run(go()) is False
    assert sender.stats.spooled == 1 and len(sender.spool) == 1  # kept for a replay, not dropped
    assert sender.online  # a 500 is about this frame, not an outage

"""Readiness a balancer can use, against a Triton server this test owns and SIGKILLs:
``/health/ready`` is 503 while inference is unavailable (``/health/live`` stays 200), and
200 again soon after Triton is back; the time from Triton ready to the first inspection
answered is measured (``build/fault-suite/triton_recovery.json``) and must stay under
1.2 s."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx

from pcb.synthetic import render_board
from serving.cpu_server import TritonServer, free_ports
from tests.conftest import ROOT, encode
from tests.gateway_server import GatewayServer


def _until(fn, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fn():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError


def test_readiness_follows_triton_and_recovery_is_quick(repository, tmp_path):
    ports = free_ports()
    triton = TritonServer(repository=repository, ports=ports, log_file=tmp_path / "triton.log").start(timeout=180)
    gw = GatewayServer({"TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                        "OUTBOX_PATH": str(tmp_path / "o.db"), "IMAGE_POLICY": "none", "ADMIN_TOKEN": "r-admin"},
                       tmp_path / "gw.log").start()
    try:
        key = httpx.post(f"{gw.url}/admin/devices", headers={"Authorization": "Bearer r-admin"},
                         json={"device_id": "pi-right", "side": "right"}).json()["api_key"]
        img = encode(render_board(1).image)

        def inspect() -> httpx.Response:
            return httpx.post(f"{gw.url}/v1/inspect", headers={"X-Device-Id": "pi-right", "X-API-Key": key},
                              files={"image": ("b.jpg", img, "image/jpeg")}, data={"board_id": f"R{time.time()}"},
                              timeout=10)

        assert httpx.get(f"{gw.url}/health/ready").status_code == 200
        assert inspect().status_code == 200
        os.killpg(triton.proc.pid, signal.SIGKILL)  # our own child, by its id
        triton.proc.wait(10)
        went_unready = _until(lambda: httpx.get(f"{gw.url}/health/ready").status_code == 503, 10)
        r = httpx.get(f"{gw.url}/health/ready")
        assert r.json()["code"] == "not_ready" and r.json()["triton"] is False and "Retry-After" in r.headers
        assert httpx.get(f"{gw.url}/health/live").status_code == 200
        down = inspect()
        assert down.status_code == 503 and down.json()["code"] == "inference_unavailable"

        triton = TritonServer(repository=repository, ports=ports, log_file=tmp_path / "triton2.log")
        triton.start(timeout=180)  # returns once Triton itself answers ready
        ready_after = _until(lambda: httpx.get(f"{gw.url}/health/ready").status_code == 200, 30)
        t0 = time.monotonic()
        serve_after = _until(lambda: inspect().status_code == 200, 30) + ready_after
        report = {"unready_after_kill_s": round(went_unready, 3), "ready_after_triton_ready_s": round(ready_after, 3),
                  "first_inspection_after_triton_ready_s": round(serve_after, 3),
                  "first_inspection_took_s": round(time.monotonic() - t0, 3)}
        out = ROOT / "build" / "fault-suite"
        out.mkdir(parents=True, exist_ok=True)
        (out / "triton_recovery.json").write_text(json.dumps(report, indent=2))
        print("Triton recovery:", report)
        # gRPC reconnects at most 0.5 s (+20 % jitter) apart, then one inspection: well
        # under 1.2 s on two busy cores; the default backoff (~1.5 s and more) fails here
        assert serve_after < 1.2, report
    finally:
        gw.stop()
        triton.stop()

"""``make demo``: a whole inspection line on this machine.

Starts the real CPU Triton server on the repository and the gateway on its embedded
defaults (SQLite, in-process pairing, a local outbox), registers the two cameras, and plays
a conveyor: for every board the left camera (Pi 1, drives the sorter's GPIO) and the right
camera (Pi 2) post their frames of the same board id separately, as on the real line, and
the gateway pairs them. Each board's fused verdict, its Korean label, the GPIO pulse Pi 1
fires and the latency against the seed's 300 ms budget are printed; the live dashboard is
at the printed URL while it runs (``--hold`` keeps everything up afterwards).

The simulated edges here are plain HTTP clients over synthetic boards; the full Pi client
(capture, spool, retries, GPIO driver) is ``pi_edge/``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import httpx
import numpy as np

from pcb import taxonomy
from pcb.synthetic import render_board
from serving.cpu_server import DEFAULT_REPOSITORY, ROOT, TritonServer, free_port

BUDGET_MS = 300  # seed 001: a board's verdict in < 300 ms end to end
ADMIN_TOKEN = "demo-admin"


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not come up")


def run_line(gateway: str, boards: int, fps: float, seed: int = 2024) -> list[float]:
    tax = taxonomy.load()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    keys = {}
    for dev, side, gpio in (("pi-1-left", "left", True), ("pi-2-right", "right", False)):
        r = httpx.post(f"{gateway}/admin/devices", headers=admin,
                       json={"device_id": dev, "side": side, "drives_gpio": gpio, "name": f"demo {side} camera"})
        keys[dev] = r.json()["api_key"]

    def post(client: httpx.Client, dev: str, board: str, img: bytes) -> dict:
        r = client.post("/v1/inspect", headers={"X-Device-Id": dev, "X-API-Key": keys[dev],
                                                "Idempotency-Key": f"{board}-{dev}"},
                        files={"image": (f"{board}.jpg", img, "image/jpeg")},
                        data={"board_id": board, "captured_at": str(time.time())})
        r.raise_for_status()
        return r.json()

    latencies = []
    print(f"{'board':>8}  {'left':<24} {'right':<24} {'board verdict':<24} {'Pi 1 GPIO':<14} {'ms':>6}")
    with httpx.Client(base_url=gateway, timeout=10) as left_c, httpx.Client(base_url=gateway, timeout=10) as right_c, \
            cf.ThreadPoolExecutor(2) as pool:
        for b in range(boards):
            board = f"DEMO-{int(time.time())}-{b:04d}"
            left_img, right_img = render_board(seed + 2 * b), render_board(seed + 2 * b + 1)
            t0 = time.perf_counter()
            fl = pool.submit(post, left_c, "pi-1-left", board, _jpeg(left_img.image))
            fr = pool.submit(post, right_c, "pi-2-right", board, _jpeg(right_img.image))
            left, right = fl.result(), fr.result()
            ms = (time.perf_counter() - t0) * 1000
            latencies.append(ms)

            def side(r: dict) -> str:
                return ",".join(sorted({d["class"] for d in r["detections"]})) or "-"

            v = tax.verdict(left["board"]["verdict"]["code"])
            g = left["gpio"]
            gpio = f"pin {g['pin']:>2} {g['duration_ms']}ms" if g else "-"
            flag = " PARTIAL" if left["board"]["partial"] else ""
            late = "  LATE" if ms > BUDGET_MS else ""
            print(f"{b:>8}  {side(left)[:24]:<24} {side(right)[:24]:<24} {v.name + ' (' + v.label + ')':<24} "
                  f"{gpio:<14} {ms:6.1f}{flag}{late}")
            time.sleep(max(0.0, 1 / fps - ms / 1000))
    lat = np.array(latencies)
    print(f"\n{boards} boards: p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
          f"{int((lat > BUDGET_MS).sum())} over the {BUDGET_MS} ms budget")
    return latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.demo_line", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    ap.add_argument("--boards", type=int, default=30)
    ap.add_argument("--fps", type=float, default=3.0, help="boards per second on the conveyor")
    ap.add_argument("--port", type=int, default=8080, help="gateway port (dashboard at http://127.0.0.1:PORT/)")
    ap.add_argument("--hold", action="store_true", help="keep Triton and the gateway up after the boards")
    args = ap.parse_args(argv)

    build = ROOT / "build" / "demo"
    build.mkdir(parents=True, exist_ok=True)
    for f in ("gateway.db", "outbox.db"):
        (build / f).unlink(missing_ok=True)
    srv = TritonServer(repository=args.repository,
                       ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()},
                       log_file=build / "triton.log")
    t0 = time.perf_counter()
    with srv:
        print(f"Triton (CPU, PyPI build) ready in {time.perf_counter() - t0:.1f} s at {srv.grpc_url}")
        env = {**os.environ, "TRITON_URL": srv.grpc_url, "TRITON_HTTP_URL": srv.http_url,
               "MODEL_REPOSITORY": str(args.repository), "DATABASE_URL": f"sqlite:///{build / 'gateway.db'}",
               "OUTBOX_PATH": str(build / "outbox.db"), "IMAGE_DIR": str(build / "images"), "IMAGE_POLICY": "all",
               "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING"}
        gw = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--host", "127.0.0.1",
                               "--port", str(args.port), "--no-access-log", "--log-level", "warning"],
                              cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{args.port}"
            _wait(url + "/health")
            print(f"gateway up (SQLite, in-process pairing); live dashboard: {url}/\n")
            run_line(url, args.boards, args.fps)
            stats = httpx.get(url + "/api/statistics").json()
            print(f"statistics: {stats['total_inspections']} boards, defect rate {stats['defect_rate']} %")
            if args.hold:
                print(f"\nholding; dashboard at {url}/ (Ctrl-C to stop)")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            gw.terminate()
            gw.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make demo``: a whole inspection line on this machine.

Starts the real CPU Triton server on the repository and the gateway on its embedded
defaults (SQLite, in-process pairing, a local outbox), registers the two cameras, and plays
a conveyor: for every board the left camera (Pi 1, drives the sorter's GPIO) and the right
camera (Pi 2) post their frames of the same board id separately, as on the real line, and
the gateway pairs them. Each board's fused verdict, its Korean label, the GPIO pulse Pi 1
fires and the latency against the seed's 300 ms budget are printed; the live dashboard is
at the printed URL while it runs (``--hold`` keeps everything up afterwards).

The edges are the real Pi client (``pi_edge.Edge``: sender with spool and retries, GPIO
driver) over synthetic boards, with gpiozero's mock pins standing in for the sorter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from pcb import taxonomy
from serving.cpu_server import DEFAULT_REPOSITORY, ROOT, TritonServer, wait_http

BUDGET_MS = 300  # seed 001: a board's verdict in < 300 ms end to end
ADMIN_TOKEN = "demo-admin"  # a local demo only; the dashboard's sign-in page takes it as the key
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def run_line(gateway: str, boards: int, fps: float) -> list[float]:
    """Two simulated Pi edges (pi_edge.Edge over synthetic boards): the left one drives
    gpiozero's mock pins and prints each pulse, the right one only reports."""
    import asyncio

    from pi_edge.capture import SyntheticBoards
    from pi_edge.config import EdgeConfig
    from pi_edge.edge import Edge

    tax = taxonomy.load()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    keys = {}
    for dev, side, gpio in (("pi-1-left", "left", True), ("pi-2-right", "right", False)):
        r = httpx.post(f"{gateway}/admin/devices", headers=admin,
                       json={"device_id": dev, "side": side, "drives_gpio": gpio, "name": f"demo {side} camera"})
        keys[dev] = r.json()["api_key"]
    spool = ROOT / "build" / "demo" / "spool"
    edges = []
    for dev, side in (("pi-1-left", "left"), ("pi-2-right", "right")):
        cfg = EdgeConfig(gateway_url=gateway, device_id=dev, api_key=keys[dev], side=side, drives_gpio=side == "left",
                         fps=fps, source="synthetic", spool_dir=str(spool / side), gpio_driver="mock",
                         log_dir=str(ROOT / "build" / "demo" / "logs"), line_id="demo")
        # the two edges start together, so the gateway hands both the same fresh line session
        edges.append(Edge(cfg, SyntheticBoards(side, 640, 480, count=boards)))
    left = edges[0]
    latencies: list[float] = []
    print(f"{'board':<24} {'left side':<22} {'board verdict':<26} {'Pi 1 GPIO pulse':<18} {'ms':>6}")
    original = left.on_result

    def show(frame, result):
        original(frame, result)  # drives the (mock) sorter pin
        ms = (time.time() - frame.captured_at) * 1000
        latencies.append(ms)
        v = tax.verdict(result["board"]["verdict"]["code"])
        g = result["gpio"]
        pulse = f"pin {g['pin']:>2} for {g['duration_ms']} ms" if g else "-"
        sides = ",".join(sorted({d["class"] for d in result["detections"]})) or "-"
        flag = " PARTIAL" if result["board"]["partial"] else ""
        late = "  LATE" if ms > BUDGET_MS else ""
        print(f"{frame.board_id:<24} {sides[:22]:<22} {v.name + ' (' + v.label + ')':<26} {pulse:<18} "
              f"{ms:6.1f}{flag}{late}")

    left.on_result = show  # type: ignore[method-assign]  # print each board as the edge handles it
    left.sender.on_result = show

    async def both():
        await asyncio.gather(*(e.run(boards) for e in edges))

    try:
        asyncio.run(both())
    finally:
        for e in edges:
            e.close()
    lat = np.array(latencies) if latencies else np.array([0.0])
    print(f"\n{len(latencies)} boards: p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms "
          f"(capture to GPIO), {int((lat > BUDGET_MS).sum())} over the {BUDGET_MS} ms budget; "
          f"{len(left.gpio.pulses) if left.gpio else 0} pulses on Pi 1, skipped {sum(e.sender.stats.skipped for e in edges)} frames")
    return latencies


def run_batch(gateway: str, folder: Path) -> None:
    """Re-inspect the line's image archive as a batch job (the batch engine embedded in the
    gateway), following its progress over SSE, then print the summary report's numbers."""
    r = httpx.post(f"{gateway}/api/v1/jobs", headers=ADMIN, data={"source_dir": str(folder), "priority": "low",
                                                   "name": "demo archive re-inspection"}, timeout=30)
    r.raise_for_status()
    job = r.json()
    print(f"\nbatch job {job['job_id'][:8]}: re-inspecting {job['total']} archived images (priority low)")
    with httpx.stream("GET", f"{gateway}/api/v1/jobs/{job['job_id']}/events", headers=ADMIN, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                p = json.loads(line[6:])
                c = p["counts"]
                print(f"  {p['percent']:5.1f} %  completed {c['completed']:>4}  failed {c['failed']}  "
                      f"{p['items_per_s']:6.1f} img/s", flush=True)
                if p["state"] != "running":
                    break
    summ = httpx.get(f"{gateway}/api/v1/jobs/{job['job_id']}/results", params={"format": "summary"},
                     headers=ADMIN).json()
    print(f"  verdicts {summ['verdicts']}, defect rate {summ['defect_rate']}; report: "
          f"{gateway}/api/v1/jobs/{job['job_id']}/results?format=report")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.line", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    ap.add_argument("--boards", type=int, default=30)
    ap.add_argument("--fps", type=float, default=4.0, help="boards per second on the conveyor")
    ap.add_argument("--port", type=int, default=8080, help="gateway port (dashboard at http://127.0.0.1:PORT/)")
    ap.add_argument("--hold", action="store_true", help="keep Triton and the gateway up after the boards")
    args = ap.parse_args(argv)

    build = ROOT / "build" / "demo"
    build.mkdir(parents=True, exist_ok=True)
    for f in ("store", "outbox.db"):
        (build / f).unlink(missing_ok=True)
    for d in ("images", "batch"):  # a fresh archive each run
        shutil.rmtree(build / d, ignore_errors=True)
    srv = TritonServer(repository=args.repository, log_file=build / "triton.log")
    t0 = time.perf_counter()
    with srv:
        print(f"Triton (CPU, PyPI build) ready in {time.perf_counter() - t0:.1f} s at {srv.grpc_url}")
        env = {**os.environ, "TRITON_URL": srv.grpc_url, "TRITON_HTTP_URL": srv.http_url,
               "MODEL_REPOSITORY": str(args.repository), "DATABASE_URL": f"sqlite:///{build / 'store'}",
               "OUTBOX_PATH": str(build / "outbox.db"), "IMAGE_DIR": str(build / "images"), "IMAGE_POLICY": "all",
               "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING", "BATCH_DATA_DIR": str(build / "batch"),
               "BATCH_ALLOWED_ROOTS": str(build / "images")}
        gw = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--host", "127.0.0.1",
                               "--port", str(args.port), "--no-access-log", "--log-level", "warning"],
                              cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{args.port}"
            wait_http(url + "/health", 60, gw)
            print(f"gateway up (SQLite, in-process pairing); live dashboard: {url}/ (sign in with the key {ADMIN_TOKEN})\n")
            run_line(url, args.boards, args.fps)
            stats = httpx.get(url + "/api/statistics", headers=ADMIN).json()
            print(f"statistics: {stats['total_inspections']} boards, defect rate {stats['defect_rate']} %")
            run_batch(url, build / "images")
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

"""A simulated inspection line against the real CPU Triton server (``make demo``).

Starts Triton on the repository, then plays a conveyor: for each board the left and right
cameras' frames (synthetic boards, 640x480 JPEG q85 like the seed's Pi) go to the
``pcb_dual_inspect`` ensemble in one request, and the board verdict, its Korean label and
the GPIO pulse the left Pi would fire are printed, with the end-to-end latency against the
seed's 300 ms budget.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as grpc

from pcb import taxonomy
from pcb.synthetic import render_board
from serving.cpu_server import DEFAULT_REPOSITORY, TritonServer, free_port

BUDGET_MS = 300  # seed 001: a board's verdict in < 300 ms end to end


def _input(name: str, data: bytes) -> grpc.InferInput:
    arr = np.frombuffer(data, np.uint8)[None]
    inp = grpc.InferInput(name, list(arr.shape), "UINT8")
    inp.set_data_from_numpy(arr)
    return inp


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def run_line(url: str, boards: int, seed: int = 2024, fps: float = 5.0) -> list[float]:
    tax = taxonomy.load()
    client = grpc.InferenceServerClient(url)
    latencies = []
    print(f"{'board':>5}  {'left':<18} {'right':<18} {'board verdict':<22} {'GPIO':<12} {'ms':>6}")
    for b in range(boards):
        left = render_board(seed + 2 * b)
        right = render_board(seed + 2 * b + 1)
        t0 = time.perf_counter()
        r = client.infer("pcb_dual_inspect", [_input("LEFT_IMAGE", _jpeg(left.image)),
                                               _input("RIGHT_IMAGE", _jpeg(right.image))])
        ms = (time.perf_counter() - t0) * 1000
        latencies.append(ms)

        def side(s: str, r=r) -> str:
            names = [n.decode() for n in r.as_numpy(f"{s}_CLASS_NAMES")[0]]
            return ",".join(sorted(set(names))) or "-"

        v = tax.verdict(int(r.as_numpy("BOARD_VERDICT")[0, 0]))
        pin, dur = int(r.as_numpy("GPIO_PIN")[0, 0]), int(r.as_numpy("GPIO_DURATION_MS")[0, 0])
        late = "  LATE" if ms > BUDGET_MS else ""
        print(f"{b:>5}  {side('LEFT')[:18]:<18} {side('RIGHT')[:18]:<18} {v.name + ' (' + v.label + ')':<22} "
              f"pin {pin:>2} {dur:>3}ms {ms:6.1f}{late}")
        time.sleep(max(0.0, 1 / fps - ms / 1000))
    lat = np.array(latencies)
    print(f"\n{boards} boards: p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
          f"{(lat > BUDGET_MS).sum()} over the {BUDGET_MS} ms budget")
    return latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.demo_line")
    ap.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    ap.add_argument("--boards", type=int, default=20)
    ap.add_argument("--url", help="use a running Triton (gRPC host:port) instead of starting one")
    args = ap.parse_args(argv)
    if args.url:
        run_line(args.url, args.boards)
        return 0
    log = Path("build/demo_triton.log")
    log.parent.mkdir(exist_ok=True)
    srv = TritonServer(repository=args.repository,
                       ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()}, log_file=log)
    t0 = time.perf_counter()
    with srv:
        print(f"Triton (CPU, PyPI build) ready in {time.perf_counter() - t0:.1f} s at {srv.grpc_url}; log {log}\n")
        run_line(srv.grpc_url, args.boards)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

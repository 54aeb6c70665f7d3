"""``make bench-shadow``: the line's latency with a shadow version on and off (issue 18).

The line as the plant runs it (``bench/line_load.py``: two cameras, boards on a fixed clock)
through a real gateway and the CPU Triton. A candidate detector version (the same network
exported again as version 2: what a retrained model costs) is shadowed with every answered
side mirrored to it (``SHADOW_SHARE=1``, the worst case). Rounds alternate off / on / off /
on so drift on a shared machine falls on both. Target: board p50 with shadowing within 10 %
of without. Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time

import httpx
import numpy as np

from bench.common import OUT, WEIGHTS, bench_images, bench_repository, git_rev, machine, write_section
from bench.gateway_process import GatewayProcess
from bench.line_load import ADMIN, Line, LineRun, for_seconds
from export import onnx_target
from serving.cpu_server import TritonServer

WORK = OUT / "shadow"


def _shadow(url: str, on: bool) -> None:
    path = f"{url}/admin/models/pcb_detector/shadow"
    r = (httpx.post(path, headers=ADMIN, json={"version": 2}, timeout=120) if on
         else httpx.delete(path, headers=ADMIN, timeout=120))
    r.raise_for_status()


def run(args) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    repo = bench_repository(WORK / "model_repository")
    onnx_target.add_version(repo, WEIGHTS, imgsz=320, max_batch=16)  # version 2, not served
    triton = TritonServer(repository=repo, log_file=WORK / "triton.log")
    res: dict = {"args": vars(args), "rounds": []}
    with triton.start(timeout=600):
        gw = GatewayProcess(triton.grpc_url, WORK, TRITON_HTTP_URL=triton.http_url, MODEL_REPOSITORY=str(repo),
                            SHADOW_SHARE="1.0", PAIRING_WINDOW_MS="400")
        with gw:
            line = Line(gw.url, bench_images(16), args.boards_per_s)
            line.register()
            asyncio.run(line.run(for_seconds(5)))  # warm-up
            for k in range(args.rounds):
                for on in (False, True):
                    _shadow(gw.url, on)
                    time.sleep(6 if on else 1)  # every worker's refresh sees the change (5 s)
                    r: LineRun = asyncio.run(line.run(for_seconds(args.seconds)))
                    s = r.summary()
                    if on:
                        s["shadow"] = httpx.get(f"{gw.url}/admin/models/pcb_detector/shadow", headers=ADMIN,
                                                timeout=30).json()["mirror"]
                    s["on"], s["round"] = on, k
                    res["rounds"].append(s)
                    print(("shadow on " if on else "shadow off"), s)
            _shadow(gw.url, False)
    return res


def report(r: dict) -> str:
    a = r["args"]
    rows = r["rounds"]
    lines = ["## Shadow version beside the line (`make bench-shadow`)", "",
             f"Command: `make bench-shadow` (= `python -m bench.shadow_bench`), commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}.",
             f"Machine: {machine()}. Two cameras at {a['boards_per_s']} boards/s through one gateway worker and the "
             f"CPU Triton; {a['seconds']:.0f} s per round, rounds alternate. Shadow: version 2 (the same network "
             "exported again) as `pcb_detector_shadow`, every answered side mirrored (`SHADOW_SHARE=1`).", "",
             "| round | shadow | boards | board p50 ms | board p99 ms | frame p50 ms | mirrored | dropped |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        m = s.get("shadow", {})
        lines.append(f"| {s['round']} | {'on' if s['on'] else 'off'} | {s['boards']} | {s['board_p50']:.1f} | "
                     f"{s['board_p99']:.1f} | {s['frame_p50']:.1f} | {m.get('mirrored', '-')} | {m.get('dropped', '-')} |")
    off = [s["board_p50"] for s in rows if not s["on"]]
    on = [s["board_p50"] for s in rows if s["on"]]
    p99_off = [s["board_p99"] for s in rows if not s["on"]]
    p99_on = [s["board_p99"] for s in rows if s["on"]]
    lines += ["", f"- board p50 with shadowing / without: {np.mean(on) / np.mean(off):.2f}x "
                  f"({np.mean(on):.1f} vs {np.mean(off):.1f} ms; target <= 1.10x); p99 "
                  f"{np.mean(p99_on) / np.mean(p99_off):.2f}x ({np.mean(p99_on):.1f} vs {np.mean(p99_off):.1f} ms)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shadow_bench")
    ap.add_argument("--boards-per-s", type=float, default=5.0, help="5 boards/s = 10 frames/s from two cameras")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    r = run(ap.parse_args(argv))
    write_section("shadow", report(r))
    print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make bench-line``: the line's capacity through the real gateway, and its cold first
board (issue 16), in one run on one machine.

1. The references, each with the machine to itself: the in-process pipeline's best
   throughput (bench/inprocess.py, decode -> letterbox -> onnxruntime -> NMS at the best
   batch) and the seed design's (bench/seed_server.py at its best concurrency), in boards/s
   (two images a board).
2. The CPU Triton server and one gateway process (bench/gateway_process.py); the first board
   right after they started (bench/cold_board.py).
3. Two cameras through the Pi's own sender (``bench.line_load.EdgeLine``) at a rising board
   rate, ``--step-s`` each; a rate is served when board p99 < 300 ms, no frame was skipped
   and none failed. The capacity is the highest rate served, every lower one served too.
   Once per sender depth in ``--depths``: the sender's default (one latency budget of
   frames at the offered rate) and the fixed two requests on the wire it had before.
4. The first board after a gateway restart, then after a hot-swap of pcb_detector.

Writes its section of docs/benchmarks.md and docs/line_capacity.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from bench.cold_board import BoardsInTurn, boards_in_turn, hot_swap, report_lines
from bench.common import OUT, ROOT, WEIGHTS, bench_images, bench_repository, git_rev, machine, write_section
from bench.gateway_bench import closed_loop
from bench.gateway_process import GatewayProcess
from bench.inprocess import pipeline_throughput
from bench.line_load import BUDGET_MS, EdgeLine, LineRun, register
from serving.cpu_server import TritonServer, free_port, wait_http
from serving.repository import DETECTOR

PLOT = ROOT / "docs" / "line_capacity.png"
TARGET_INPROCESS, TARGET_SEED = 0.8, 2.5  # issue 16's ratios for the line's capacity
START, RESTART, SWAP = "Triton + gateway start", "gateway restart", f"hot-swap of {DETECTOR} to a new version"


def served(s: dict) -> bool:
    return s["board_p99"] < BUDGET_MS and s["skipped"] == 0 and s["errors"] == 0


def inprocess_best(onnx: Path, images: list[bytes], batches: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Images/s per batch size, the pipeline in this process with all cores."""
    return {b: pipeline_throughput(onnx, images, b, seconds) for b in batches}


def seed_best(images: list[bytes], levels: tuple[int, ...], seconds: float) -> dict[int, float]:
    """Images/s per concurrency through the seed's design (its own process, ultralytics)."""
    port = free_port()
    seed = subprocess.Popen([sys.executable, "-m", "bench.seed_server", "--port", str(port), "--weights", str(WEIGHTS)],
                            cwd=ROOT)
    b64 = {d: base64.b64encode(d).decode() for d in images}
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, seed)

        async def run() -> dict[int, float]:
            async with httpx.AsyncClient(timeout=60) as http:
                async def call(img: bytes) -> None:
                    r = await http.post(f"http://127.0.0.1:{port}/predict", json={"frame": b64[img], "camera_id": "l"})
                    r.raise_for_status()

                return {c: (await closed_loop(call, images, c, seconds))["throughput"] for c in levels}

        return asyncio.run(run())
    finally:
        seed.terminate()
        seed.wait(20)


BUDGET_DEPTH = "budget"  # --depths: the sender's default, ceil(budget x rate)


def depth_name(depth: str) -> str:
    return ("one latency budget (the sender's default)" if depth == BUDGET_DEPTH
            else f"fixed {depth} on the wire")


# whose CPU each step reads: the server side and the simulated cameras (this process, the
# Pi's own sender; on a plant it runs on the two Pis, here it shares the server's cores)
CPU_PARTS = ("Triton", "gateway", "cameras")


def cpu_seconds(pid: int, with_children: bool) -> float:
    """User + system CPU seconds of a process (and of its live children: Triton's backend stubs)."""
    proc = psutil.Process(pid)
    total = 0.0
    for q in [proc] + (proc.children(recursive=True) if with_children else []):
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a child that ended meanwhile
            pass
    return total


def line_steps(line: EdgeLine, rates: list[float], step_s: float, pids: dict[str, int]) -> list[dict]:
    """Each rate for ``step_s`` until the first not served, then the edge between it and the
    last served found to 1 board/s; rows by rate. ``pids``: Triton's and
    the gateway's, for the CPU each frame cost them (and the cameras, this process)."""
    def sample() -> dict[str, float]:
        return {"Triton": cpu_seconds(pids["Triton"], True), "gateway": cpu_seconds(pids["gateway"], False),
                "cameras": cpu_seconds(os.getpid(), False)}

    rows: list[dict] = []

    def step(rate: float) -> dict:
        cpu0 = sample()
        run: LineRun = asyncio.run(line.run(rate, step_s))
        cpu1 = sample()
        s = run.summary() | {"rate": rate}
        frames = max(1, len(run.frames_ms))
        s["cpu_ms"] = {k: 1000 * (cpu1[k] - cpu0[k]) / frames for k in CPU_PARTS}
        s["served"] = served(s)
        rows.append(s)
        print(f"{rate:5.1f} boards/s  depth {s['in_flight_limit']:2d}  boards {s['boards']:4d}  "
              f"board p50 {s['board_p50']:6.0f}  p99 "
              f"{s['board_p99']:6.0f} ms  skipped {s['skipped']}  errors {s['errors']}  "
              f"{'served' if s['served'] else 'NOT served'}  CPU ms/frame "
              + " ".join(f"{k} {v:.1f}" for k, v in s["cpu_ms"].items()), flush=True)
        time.sleep(1.0)  # let the last answers' records drain before the next rate
        return s

    for rate in rates:
        if not step(rate)["served"]:
            break
    if not rows[-1]["served"]:  # the edge to 1 board/s: bisect between the last rate served and this one
        low, high = (rows[-2]["rate"] if len(rows) > 1 else 0.0), rows[-1]["rate"]
        while high - low > 1:
            mid = float(round((low + high) / 2))
            if step(mid)["served"]:
                low = mid
            else:
                high = mid
    rows.sort(key=lambda r: r["rate"])
    return rows


def run(args: argparse.Namespace) -> dict:
    work = OUT / "line_capacity"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    images = bench_images(16)
    repo = bench_repository(work / "model_repository")
    res: dict = {"args": vars(args)}
    res["inprocess"] = inprocess_best(repo / DETECTOR / "1" / "model.onnx", images, (1, 4, 8), args.ref_s)
    print("in-process images/s by batch:", {b: round(v, 1) for b, v in res["inprocess"].items()}, flush=True)
    res["seed"] = seed_best(images, (1, 4, 8), args.ref_s)
    print("seed design images/s by concurrency:", {c: round(v, 1) for c, v in res["seed"].items()}, flush=True)
    cold: dict[str, list[BoardsInTurn]] = {START: [], RESTART: [], SWAP: []}
    triton = TritonServer(repository=repo, log_file=work / "triton.log")
    with triton.start(timeout=300):
        with GatewayProcess(triton.grpc_url, work) as gw0:  # devices registered before the line's start
            keys = register(gw0.url)
        gw = GatewayProcess(triton.grpc_url, work)
        try:
            gw.start()
            cold[START].append(asyncio.run(boards_in_turn(gw.url, keys, images, "start")))
            res["steps"] = {}
            for depth in args.depths:
                line = EdgeLine(gw.url, keys, images, work / "spool",
                                max_in_flight=None if depth == BUDGET_DEPTH else int(depth))
                asyncio.run(line.run(2, 3))  # warm
                print(f"sender depth: {depth_name(depth)}", flush=True)
                assert triton.proc is not None and gw.proc is not None
                res["steps"][depth] = line_steps(line, args.rates, args.step_s,
                                                 {"Triton": triton.proc.pid, "gateway": gw.proc.pid})
            for k in range(args.cold_repeats):
                gw.stop()
                gw.start()
                cold[RESTART].append(asyncio.run(boards_in_turn(gw.url, keys, images, f"restart{k}")))
            for k in range(args.cold_repeats):
                version = hot_swap(repo, triton.http_url, WEIGHTS)
                swapped = asyncio.run(boards_in_turn(gw.url, keys, images, f"swap{k}"))
                if swapped.versions != {version}:
                    raise RuntimeError(f"after the swap to {version} the boards were answered by {swapped.versions}")
                cold[SWAP].append(swapped)
        finally:
            gw.stop()
    for k in range(1, args.cold_repeats):  # the whole platform again, on the repository as the swaps left it
        with TritonServer(repository=repo, log_file=work / "triton.log").start(timeout=300) as again, \
                GatewayProcess(again.grpc_url, work) as gw:
            cold[START].append(asyncio.run(boards_in_turn(gw.url, keys, images, f"start{k}")))
    res["cold"] = cold
    for name, runs in cold.items():
        print(f"first board after {name}: " + ", ".join(f"{r.first_ms:.0f} vs {r.steady_ms:.0f} ms ({r.ratio:.2f}x)"
                                                         for r in runs), flush=True)
    return res


def capacity(steps: list[dict]) -> float:
    """The highest rate served with every lower rate tried served too (0 if none)."""
    best = 0.0
    for s in steps:  # by rate
        if not s["served"]:
            break
        best = s["rate"]
    return best


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, (depth, steps) in enumerate(res["steps"].items()):
        rates = [s["rate"] for s in steps]
        ax.plot(rates, [s["board_p50"] for s in steps], "o-" if k == 0 else "o--", color=f"C{2 * k}",
                label=f"board p50, {depth_name(depth)}")
        ax.plot(rates, [s["board_p99"] for s in steps], "s-" if k == 0 else "s--", color=f"C{2 * k + 1}",
                label=f"board p99, {depth_name(depth)}")
        for s in steps:
            if s["skipped"] or s["errors"]:
                ax.annotate(f"{s['skipped']} skipped", (s["rate"], s["board_p99"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
    ax.axhline(BUDGET_MS, color="red", ls="--", lw=1, label=f"{BUDGET_MS} ms budget")
    inproc, seed = max(res["inprocess"].values()) / 2, max(res["seed"].values()) / 2
    ax.axvline(inproc, color="green", ls=":", label=f"in-process pipeline, best ({inproc:.1f})")
    ax.axvline(TARGET_INPROCESS * inproc, color="green", ls="-.", lw=0.8, label=f"target: {TARGET_INPROCESS}x in-process")
    ax.axvline(seed, color="gray", ls=":", label=f"seed design, best ({seed:.1f})")
    ax.axvline(TARGET_SEED * seed, color="gray", ls="-.", lw=0.8, label=f"target: {TARGET_SEED}x the seed")
    ax.set_xlabel("offered boards/s (two 640x480 frames each)")
    ax.set_ylabel("ms, capture to both answers")
    ax.set_yscale("log")
    ax.set_yticks([50, 100, 200, 300, 500, 1000])
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title("Line capacity through the gateway (make bench-line)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict, started: str) -> str:
    a = res["args"]
    inproc, seed = max(res["inprocess"].values()) / 2, max(res["seed"].values()) / 2
    caps = {depth: capacity(steps) for depth, steps in res["steps"].items()}
    lines = ["## Line capacity (`make bench-line`)", "",
             f"Command: `make bench-line` (= `python -m bench.line_capacity`), run {started}, commit {git_rev()}.",
             f"Machine: {machine()}. One uvicorn gateway (SQLite, local outbox, in-process pairing), the CPU Triton "
             "server on the same cores. Two cameras through the Pi's own sender (`pi_edge.sender`: at most its "
             "depth of requests on the wire per camera, a newer frame replaces one still waiting, which is then "
             "*skipped*), once per sender depth: the sender's default, one latency budget of frames at the offered "
             "rate (ceil(300 ms x rate), at least 2), and the fixed depth it had before. Boards on a "
             f"fixed clock, {a['step_s']:g} s per rate; board latency from capture to both sides answered. A rate "
             f"is served with board p99 < {BUDGET_MS} ms, no frame skipped and none failed.",
             f"References in the same run, each with the machine to itself, in boards/s (two images a board): the "
             f"in-process pipeline at its best batch ({_best(res['inprocess'], 'batch')}) and the seed design at its "
             f"best concurrency ({_best(res['seed'], 'concurrency')}).", "",
             "| sender depth | offered boards/s | on the wire per camera | boards | frame p50 ms | board p50 ms "
             "| board p99 ms | board max ms | skipped | errors | served |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for depth, steps in res["steps"].items():
        for s in steps:
            lines.append(f"| {depth_name(depth)} | {s['rate']:g} | {s['in_flight_limit']} | {s['boards']} | "
                         f"{s['frame_p50']:.0f} | {s['board_p50']:.0f} | {s['board_p99']:.0f} | {s['board_max']:.0f} | "
                         f"{s['skipped']} | {s['errors']} | {'yes' if s['served'] else '**no**'} |")
    lines += ["", "| capacity | boards/s | vs in-process best | vs seed design best |", "|---|---:|---:|---:|"]
    for depth, cap in caps.items():
        lines.append(f"| the line through the gateway, {depth_name(depth)} | {cap:g} | {cap / inproc:.2f}x | "
                     f"{cap / seed:.2f}x |")
    lines += [f"| in-process pipeline, best | {inproc:.1f} | | |", f"| seed design, best | {seed:.1f} | | |", ""]
    lines += ["CPU per frame, each step (ms of CPU time, user + system, over the frames answered): Triton with "
              "its backend processes, the gateway, and the two simulated cameras (the Pi's own sender, this "
              "process: on a plant it runs on the Pis, here it takes the server's cores).", "",
              "| sender depth | offered boards/s | Triton ms/frame | gateway ms/frame | cameras ms/frame "
              "| all, cores busy |", "|---|---:|---:|---:|---:|---:|"]
    for depth, steps in res["steps"].items():
        for s in steps:
            c = s["cpu_ms"]
            busy = sum(c.values()) * 2 * s["rate"] / 1000  # ms per frame x frames per second
            lines.append(f"| {depth_name(depth)} | {s['rate']:g} | {c['Triton']:.1f} | {c['gateway']:.1f} | "
                         f"{c['cameras']:.1f} | {busy:.2f} |")
    lines += ["", "Where the slowest 1 % of frames spent their time, the last rate served and the first one not "
              "(means, ms): capture to answer; the gateway's own timer (from the request's arrival to the answer "
              "built), of it Triton (inference) and the wait for the other side; outside that timer (the "
              "sender's mailbox, HTTP both ways, the durable outbox write, the event loop's queue); and the "
              "step's outbox writes over 50 ms.", "",
              "| sender depth | offered boards/s | capture to answer | gateway timer | of it Triton | of it pairing "
              "wait | outside the timer | outbox writes > 50 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for depth, steps in res["steps"].items():
        edge = capacity(steps)
        for s in [s for s in steps if s["rate"] == edge] + [s for s in steps if s["rate"] > edge][:1]:
            lines.append(f"| {depth_name(depth)} | {s['rate']:g} | {s['tail_client']:.0f} | "
                         f"{s['tail_gateway_total']:.0f} | {s['tail_inference']:.0f} | {s['tail_pairing']:.0f} | "
                         f"{s['tail_client'] - s['tail_gateway_total']:.0f} | "
                         f"{s['outbox_over_50ms']} of {s['outbox_writes']} |")
    lines.append("")
    cap = caps.get(BUDGET_DEPTH, max(caps.values(), default=0.0))
    lines += [f"- Targets: >= {TARGET_INPROCESS}x the in-process pipeline "
              f"({'met' if cap / inproc >= TARGET_INPROCESS else '**not met**'}: {cap / inproc:.2f}x), "
              f">= {TARGET_SEED}x the seed design ({'met' if cap / seed >= TARGET_SEED else '**not met**'}: "
              f"{cap / seed:.2f}x), with the sender's default depth.",
              "", f"![board latency vs offered rate]({PLOT.name})", "",
              "### Cold first board (issue 16, lever 4)", "",
              f"Boards one at a time (both sides together, the next 0.1 s after both answers) right after each "
              f"event, each event {res['args']['cold_repeats']} times; board 1 against the median of boards 5-15 "
              "of the same run. Board 1's time is one sample, so the table gives every run's ratio and their "
              "median; each board's slower side is split by the gateway's own account into Triton (inference) and "
              "the gateway's front (client time minus the gateway's total), medians over the runs.",
              ""]
    lines += report_lines(res["cold"])
    return "\n".join(lines)


def _best(by: dict[int, float], name: str) -> str:
    k = max(by, key=by.__getitem__)
    return f"{by[k] / 2:.1f} boards/s at {name} {k}; " + ", ".join(f"{name} {b}: {v:.1f} img/s" for b, v in by.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.line_capacity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default=",".join(str(r) for r in range(2, 62, 2)),
                    help="boards/s, in order (it stops at the first rate not served)")
    ap.add_argument("--step-s", type=float, default=12)
    ap.add_argument("--depths", default=f"{BUDGET_DEPTH},2",
                    help=f"sender depths, one pass each: '{BUDGET_DEPTH}' (the default, one latency budget of "
                         "frames) or a fixed number of requests on the wire")
    ap.add_argument("--ref-s", type=float, default=5, help="seconds per reference point")
    ap.add_argument("--cold-repeats", type=int, default=3,
                    help="times each event (start, gateway restart, hot-swap) is measured for the cold first board")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.depths = [d.strip() for d in args.depths.split(",") if d.strip()]
    for d in args.depths:
        if d != BUDGET_DEPTH and not (d.isdigit() and int(d) >= 1):
            ap.error(f"--depths: {d!r} is neither {BUDGET_DEPTH!r} nor a positive number")
    started = time.strftime("%Y-%m-%d %H:%M")
    res = run(args)
    text = report(res, started)
    print(text)
    if not args.no_write:
        write_section("line-capacity", text)
        plot(res, PLOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

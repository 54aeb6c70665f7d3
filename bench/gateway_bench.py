"""``make bench-gateway``: end-to-end load through the gateway at concurrency 1/4/16, side
by side in one run with (a) direct calls to the Triton ``pcb_inspect`` ensemble (the
gateway's overhead) and (b) the seed's design (a synchronous server running ultralytics
in-process per request), same model and images. Writes its section of docs/benchmarks.md.

``--baseline REV`` adds the gateway as it was at git revision REV (a worktree under
bench/out), against the same Triton and interleaved with today's, so a refactor's cost is
read side by side in one sitting instead of against another day's numbers."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from bench.common import OUT, ROOT, WEIGHTS, bench_images, bench_repository, git_rev, machine, write_section
from inference.aio import AsyncTriton
from serving.cpu_server import TritonServer, free_port, wait_http


async def closed_loop(call, images: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` callers in a loop for ``seconds`` (after two warm-up calls): throughput,
    p50, p99, errors."""
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = 0

    async def worker(w: int) -> None:
        nonlocal errors, counter
        i = w
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await call(images[i % len(images)])
                lat.append((time.perf_counter() - t0) * 1000)
            except Exception:  # noqa: BLE001 - counted, reported
                errors += 1
            i += concurrency
            counter += 1

    for img in images[:2]:  # warm-up
        await call(img)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    a = np.array(lat) if lat else np.array([np.nan])
    return {"throughput": len(lat) / wall, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "errors": errors, "n": len(lat)}


async def soak(call, images: list[bytes], total: int, concurrency: int, sample) -> list[tuple[int, float]]:
    """``total`` requests at ``concurrency``; the gateway's RSS sampled every 1,000."""
    started, finished, series = 0, 0, [(0, sample())]

    async def worker(w: int) -> None:
        nonlocal started, finished
        i = w
        while started < total:
            started += 1
            await call(images[i % len(images)])
            finished += 1
            i += concurrency
            if finished % 1000 == 0:
                series.append((finished, sample()))

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return series


BASELINE = "gateway @{rev} -> Triton"


def baseline_tree(rev: str) -> Path:
    """A detached worktree of ``rev`` (made once, reused): its code, this venv."""
    tree = OUT / f"baseline-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), rev], cwd=ROOT, check=True)
    return tree


def start_gateway(cwd: Path, port: int, env: dict, tag: str) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(cwd),  # this tree's packages before the venv's editable install
           "DATABASE_URL": f"sqlite:///{OUT / f'bench_gw{tag}.db'}", "OUTBOX_PATH": str(OUT / f"bench_outbox{tag}.db")}
    for f in (f"bench_gw{tag}.db", f"bench_outbox{tag}.db"):
        (OUT / f).unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--port", str(port),
                             "--no-access-log", "--log-level", "warning"], cwd=cwd, env=env)


async def run(levels: list[int], seconds: float, soak_requests: int = 0, baseline: str | None = None) -> list[dict]:
    images = bench_images(16)
    b64 = {d: base64.b64encode(d).decode() for d in images}
    repo = bench_repository()
    rows: list[dict] = []
    triton = TritonServer(repository=repo, log_file=OUT / "triton_gw.log")
    with triton:
        gw_port, seed_port = free_port(), free_port()
        env = {**os.environ, "TRITON_URL": triton.grpc_url, "IMAGE_POLICY": "none", "RATE_LIMIT_PER_S": "0",
               "LOG_LEVEL": "WARNING",
               # the seed's /predict, as the seed scripts call it: no key, from this machine only
               "SEED_COMPAT": "true", "SEED_COMPAT_ALLOW_NETS": "127.0.0.1/32", "SEED_COMPAT_RATE": "100000/second"}
        gw = start_gateway(ROOT, gw_port, env, "")
        base_port = free_port()
        base = start_gateway(baseline_tree(baseline), base_port, env, "_base") if baseline else None
        seed = subprocess.Popen([sys.executable, "-m", "bench.seed_server", "--port", str(seed_port),
                                 "--weights", str(WEIGHTS)], cwd=ROOT, env={**os.environ, "YOLO_OFFLINE": "1"})
        try:
            wait_http(f"http://127.0.0.1:{gw_port}/health", 120, gw)
            wait_http(f"http://127.0.0.1:{seed_port}/health", 120, seed)
            if base:
                wait_http(f"http://127.0.0.1:{base_port}/health", 120, base)
            gw_proc = psutil.Process(gw.pid)
            tclient = AsyncTriton(triton.grpc_url, timeout_s=60)
            # aiohttp, not httpx: httpx's own cost per request (~1 ms more than aiohttp's on
            # this machine, measured against /health) was counted as the gateway's overhead
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                             timeout=aiohttp.ClientTimeout(total=60)) as http:

                async def post(port: int, img: bytes) -> None:
                    async with http.post(f"http://127.0.0.1:{port}/predict",
                                         json={"frame": b64[img], "camera_id": "right"}) as r:
                        r.raise_for_status()
                        await r.read()

                async def via_gateway(img: bytes) -> None:
                    await post(gw_port, img)

                async def via_baseline(img: bytes) -> None:
                    await post(base_port, img)

                async def direct_triton(img: bytes) -> None:
                    await tclient.inspect(img)

                async def seed_design(img: bytes) -> None:
                    await post(seed_port, img)

                paths = [("gateway -> Triton", via_gateway)]
                if base:
                    paths.append((BASELINE.format(rev=baseline), via_baseline))
                paths += [("direct Triton ensemble", direct_triton),
                          ("seed design (sync, ultralytics in-process)", seed_design)]

                rss0 = gw_proc.memory_info().rss
                for c in levels:
                    for name, call in paths:
                        r = await closed_loop(call, images, c, seconds)
                        r.update(path=name, concurrency=c)
                        rows.append(r)
                        print(f"{name:<44} c={c:<3} {r['throughput']:7.1f}/s  p50 {r['p50_ms']:7.1f} ms  "
                              f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}")
                rss1 = gw_proc.memory_info().rss
                if soak_requests:
                    series = await soak(via_gateway, images, soak_requests, 8,
                                        lambda: gw_proc.memory_info().rss / 2**20)
                    rows.append({"path": "_soak", "series": series})
                    print("soak RSS (requests, MB):", [(n, round(m)) for n, m in series])
            await tclient.close()
            total = sum(r["n"] for r in rows if r["path"].startswith("gateway"))
            rows.append({"path": "_rss", "rss0_mb": rss0 / 2**20, "rss1_mb": rss1 / 2**20, "requests": total})
        finally:
            for p in (gw, seed, base):
                if p is None:
                    continue
                p.terminate()
                p.wait(20)
    return rows


def report(rows: list[dict], seconds: float, args_text: str = "") -> str:
    rss = next(r for r in rows if r["path"] == "_rss")
    soak_row = next((r for r in rows if r["path"] == "_soak"), None)
    rows = [r for r in rows if not r["path"].startswith("_")]
    title = "## Gateway: end-to-end load (`make bench-gateway`)"
    if any(r["path"].startswith("gateway @") for r in rows):
        title = "## Gateway: today's code beside an earlier revision (`make bench-gateway` with `--baseline`)"
    lines = [title, "",
             f"Command: `make bench-gateway` (= `python -m bench.gateway_bench{args_text}`), {seconds:.0f} s per point, "
             f"commit {git_rev()}, {time.strftime('%Y-%m-%d %H:%M')}.",
             f"Machine: {machine()}. One uvicorn worker, SQLite + outbox, image policy none; the CPU Triton server;",
             "the seed design is `bench/seed_server.py` (threaded sync HTTP server, ultralytics `predict` per request).",
             "All three serve the seed's `/predict` work (one 640x480 JPEG, q85 -> detections + verdict), same model.",
             "", "| path | concurrency | req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['path']} | {r['concurrency']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} |")
    by = {(r["path"], r["concurrency"]): r for r in rows}
    lines.append("")
    for c in sorted({r["concurrency"] for r in rows}):
        g, d, s = (by[(p, c)] for p in ("gateway -> Triton", "direct Triton ensemble",
                                        "seed design (sync, ultralytics in-process)"))
        lines.append(f"- concurrency {c}: gateway overhead p50 {g['p50_ms'] - d['p50_ms']:+.1f} ms; "
                     f"gateway throughput {g['throughput'] / s['throughput']:.2f}x the seed design, "
                     f"{g['throughput'] / d['throughput']:.2f}x direct Triton.")
        b = next((r for (p, cc), r in by.items() if cc == c and p.startswith("gateway @")), None)
        if b:
            lines.append(f"  - {b['path'].split(' ->')[0]} (baseline): overhead p50 {b['p50_ms'] - d['p50_ms']:+.1f} ms, "
                         f"{b['throughput'] / d['throughput']:.2f}x direct Triton; today / baseline "
                         f"throughput {g['throughput'] / b['throughput']:.2f}x.")
    lines.append(f"- gateway RSS {rss['rss0_mb']:.0f} MB before and {rss['rss1_mb']:.0f} MB after "
                 f"{rss['requests']} requests.")
    if soak_row:
        pts = ", ".join(f"{n}: {m:.0f}" for n, m in soak_row["series"])
        lines.append(f"- soak, {soak_row['series'][-1][0]} more requests through the gateway at concurrency 8, "
                     f"RSS in MB by request count: {pts}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_bench")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--soak", type=int, default=10_000, help="then this many requests, RSS sampled (0: skip)")
    ap.add_argument("--baseline", metavar="REV", help="also run the gateway as it was at this git revision")
    args = ap.parse_args(argv)
    rows = asyncio.run(run([int(c) for c in args.concurrency.split(",")], args.seconds, args.soak, args.baseline))
    args_text = "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    # a baseline run is its own section: the full run's numbers (the targets) stay
    write_section("gateway-baseline" if args.baseline else "gateway", report(rows, args.seconds, args_text))
    print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

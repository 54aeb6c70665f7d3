"""``make bench-line-beside``: the line's latency beside other work on the same gateway and Triton,
side by side in one run.

The line is driven as the plant runs it (``bench/line_load.py``: two cameras, boards on a
fixed clock). Each scenario measures every frame's latency and every board's:

  line alone            the reference
  + enhancement batch   20 photos (phone-sized JPEGs) uploaded as one batch while the line
                        runs, then enhanced by the same Triton; measured until the batch ends

The budget is the seed's: a board decided in < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx

from bench.common import OUT, ROOT, bench_images, bench_repository, git_rev, machine, write_section
from bench.line_load import ADMIN, BUDGET_MS, Line, LineRun, for_seconds
from serving.cpu_server import TritonServer, free_port, wait_http

ENHANCE_OPTIONS = {"quality": "fast", "upscale": 2}


def photos(n: int, size: tuple[int, int]) -> list[bytes]:
    from enhance.synthetic import face_photo

    return [cv2.imencode(".jpg", face_photo(1200 + i, size, 1, (size[1] // 6, size[1] // 4))[0],
                         [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() for i in range(n)]


async def line_beside_enhancement(url: str, line: Line, batch: list[bytes], warmup_s: float) -> tuple[LineRun, dict]:
    """The line runs; after ``warmup_s`` the batch is uploaded; the line stops when every
    photo has finished."""
    state: dict = {"done": False}

    async def enhance() -> None:
        await asyncio.sleep(warmup_s)
        async with httpx.AsyncClient(timeout=600) as http:
            t0 = time.perf_counter()
            r = await http.post(f"{url}/api/v1/enhance/batch", headers=ADMIN, data=ENHANCE_OPTIONS,
                                files=[("files", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(batch)])
            r.raise_for_status()
            state["upload_s"] = time.perf_counter() - t0
            status = r.json()["status_url"]
            while (s := (await http.get(url + status, headers=ADMIN)).json())["state"] not in ("completed", "finished"):
                await asyncio.sleep(0.5)
            state.update(total_s=time.perf_counter() - t0, completed=s["completed"], failed=s["failed"])
            state["done"] = True

    job = asyncio.create_task(enhance())
    run = await line.run(lambda: state["done"] or job.done())
    await job
    return run, state


def build_repository(narrow: bool) -> Path:
    from export.enhance_target import EnhanceExport, add_version

    repo = bench_repository(OUT / "line_repository")
    for name in ("face_restorer", "bg_upsampler"):
        shutil.rmtree(repo / name, ignore_errors=True)
    add_version(EnhanceExport(kind="gfpgan", repository=repo, narrow=narrow))
    add_version(EnhanceExport(kind="realesrgan", repository=repo, narrow=True))  # unused by "fast"
    return repo


def run(args) -> dict:
    repo = build_repository(args.narrow)
    images = bench_images(16)
    batch = photos(args.photos, (args.photo_width, args.photo_width * 3 // 4))
    res: dict = {"args": vars(args), "photo_bytes": sum(map(len, batch))}
    work = OUT / "line_beside"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    triton = TritonServer(repository=repo, ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()},
                          log_file=work / "triton.log")
    with triton.start(timeout=600):
        port = free_port()
        env = {**os.environ, "TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{work / 'gw.db'}",
               "OUTBOX_PATH": str(work / "outbox.db"), "IMAGE_DIR": str(work / "images"), "IMAGE_POLICY": "none",
               "ENHANCE_DIR": args.enhance_dir or str(work / "enhance"), "ADMIN_TOKEN": ADMIN["Authorization"][7:],
               "RATE_LIMIT_PER_S": "0", "LOG_LEVEL": "WARNING", "PAIRING_WINDOW_MS": "400"}
        gw = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--port", str(port),
                               "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/health", 120, gw)
            line = Line(url, images, args.boards_per_s)
            line.register()
            asyncio.run(line.run(for_seconds(5)))  # warm-up: first-run allocations in every model
            alone = asyncio.run(line.run(for_seconds(args.seconds)))
            res["alone"] = alone.summary()
            print("line alone:", res["alone"])
            beside, enh = asyncio.run(line_beside_enhancement(url, line, batch, args.warmup))
            res["enhance"] = beside.summary() | {"batch": enh}
            print("line + enhancement batch:", res["enhance"])
        finally:
            gw.terminate()
            gw.wait(20)
    return res


def report(r: dict) -> str:
    a = r["args"]
    net = "narrow test GFPGAN" if a["narrow"] else "full-size GFPGAN v1.4 (86 M params, random init)"
    enh = r["enhance"]["batch"]
    rows = [("line alone", r["alone"]),
            (f"line + a {a['photos']}-photo enhancement batch (upload {enh['upload_s']:.1f} s, "
             f"enhanced in {enh['total_s']:.0f} s)", r["enhance"])]
    lines = ["## The line beside other work (`make bench-line-beside`)", "",
             f"Command: `make bench-line-beside` (= `python -m bench.line_beside`), commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}.",
             f"Machine: {machine()}. One uvicorn worker (SQLite, in-process pairing), the CPU Triton server on the "
             f"same cores. The line: two cameras, {a['boards_per_s']:g} boards/s (each board's left and right "
             f"640x480 JPEGs posted to `/v1/inspect` together, on a fixed clock). The batch: {a['photos']} photos "
             f"of {a['photo_width']}x{a['photo_width'] * 3 // 4} ({r['photo_bytes'] / 2**20:.0f} MB in all), "
             f"options {json.dumps(ENHANCE_OPTIONS)}, {net}.",
             "", "| scenario | boards | frame p50 ms | frame p99 ms | board p50 ms | board p99 ms | board max ms "
                 f"| over {BUDGET_MS} ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s['boards']} | {s['frame_p50']:.0f} | {s['frame_p99']:.0f} | {s['board_p50']:.0f} "
                     f"| {s['board_p99']:.0f} | {s['board_max']:.0f} | {s['over_budget']} | {s['errors']} |")
    ratio = r["enhance"]["board_p99"] / r["alone"]["board_p99"]
    lines += ["", f"- Board p99 beside the enhancement batch: {ratio:.2f}x the line alone; "
                  f"{'within' if r['enhance']['board_p99'] <= BUDGET_MS else 'over'} the {BUDGET_MS} ms budget. "
                  f"{enh['completed']} photos completed, {enh['failed']} failed."]
    for name, key in (("line alone", "alone"), ("beside the batch", "enhance")):
        t = r[key]
        lines.append(f"- Slowest 1 % of frames, {name}: {t['tail_client']:.0f} ms at the client, of which the gateway "
                     f"counted {t['tail_gateway_total']:.0f} ms ({t['tail_inference']:.0f} ms Triton, "
                     f"{t['tail_pairing']:.0f} ms waiting for the other side); the rest is the multipart upload "
                     f"and the outbox write.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.line_beside", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards-per-s", type=float, default=5.0, help="5 boards/s = 10 frames/s from two cameras")
    ap.add_argument("--seconds", type=float, default=30, help="the line-alone reference")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--photo-width", type=int, default=3000)
    ap.add_argument("--warmup", type=float, default=3, help="seconds of line before the batch is uploaded")
    ap.add_argument("--enhance-dir", help="where the gateway keeps photos and results (default: under build/)")
    ap.add_argument("--narrow", action="store_true", help="the narrow test GFPGAN (quick)")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    r = run(args)
    text = report(r)
    print(text)
    if not args.no_write:
        write_section("line-beside", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make bench-line-beside``: the line's latency beside other work on the same gateway and Triton,
side by side in one run.

The line is driven as the plant runs it (``bench/line_load.py``: two cameras, boards on a
fixed clock). Each scenario measures every frame's latency and every board's:

  line alone            the reference
  + enhancement batch   20 photos (phone-sized JPEGs) uploaded as one batch while the line
                        runs, then enhanced by the same Triton; measured until the batch ends
  + batch job           a 1,000-image re-inspection job (``POST /api/v1/jobs``, a folder)
                        run by a separate batch worker (Celery over the machine's RabbitMQ,
                        its congestion controller on) through the same Triton, in the batch
                        lane (serving/batch_lane.py), at the batch priority level; measured
                        until the job ends.
  + idle-class burner   the floor (bench/idle_burner.py): the lane's detector run flat out
                        by bare onnxruntime under SCHED_IDLE, as long as that round's job took.
                        What the line loses beside it is what any work on these cores costs
                        it with the kernel already putting the line first.
Rounds of (line alone, line + job, line + burner), pooled.

The budget is the seed's: a board decided in < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import cv2
import httpx

from bench.common import OUT, bench_images, bench_repository, git_rev, machine, write_section
from bench.gateway_process import GatewayProcess
from bench.idle_burner import IdleBurner
from bench.line_load import ADMIN, BUDGET_MS, Line, LineRun, for_seconds
from serving.cpu_server import TritonServer

ENHANCE_OPTIONS = {"quality": "fast", "upscale": 2}


def photos(n: int, size: tuple[int, int]) -> list[bytes]:
    from enhance.synthetic import face_photo

    return [cv2.imencode(".jpg", face_photo(1200 + i, size, 1, (size[1] // 6, size[1] // 4))[0],
                         [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() for i in range(n)]


async def line_beside_job(url: str, line: Line, source_dir: Path, warmup_s: float) -> tuple[LineRun, dict]:
    """The line runs; after ``warmup_s`` an inspection job over ``source_dir`` is submitted;
    the line stops when the job has finished."""
    state: dict = {"done": False}

    async def job() -> None:
        await asyncio.sleep(warmup_s)
        async with httpx.AsyncClient(timeout=60) as http:
            t0 = time.perf_counter()
            r = await http.post(f"{url}/api/v1/jobs", headers=ADMIN,
                                data={"source_dir": str(source_dir), "kind": "inspect", "name": "line-beside"})
            r.raise_for_status()
            job_id = r.json()["job_id"]
            while (p := (await http.get(f"{url}/api/v1/jobs/{job_id}", headers=ADMIN)).json())["state"] == "running":
                await asyncio.sleep(0.5)
            state.update(total_s=time.perf_counter() - t0, images=p["total"], completed=p["counts"]["completed"],
                         failed=p["counts"]["failed"], state=p["state"])
            state["done"] = True

    task = asyncio.create_task(job())
    run = await line.run(lambda: state["done"] or task.done())
    await task
    return run, state


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


def write_job_images(folder: Path, n: int) -> Path:
    """``n`` board images (640x480 JPEG q85, 16 distinct boards repeated) in a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(bench_images(16) * (n // 16 + 1)):
        if i == n:
            break
        (folder / f"board_{i:05d}.jpg").write_bytes(data)
    return folder


def run(args) -> dict:
    from batch.local_workers import RABBIT, Worker, delete_queue

    repo = build_repository(args.narrow)
    images = bench_images(16)
    batch = photos(args.photos, (args.photo_width, args.photo_width * 3 // 4)) if args.photos else []
    res: dict = {"args": vars(args), "photo_bytes": sum(map(len, batch))}
    work = OUT / "line_beside"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    job_dir = write_job_images(work / "job_images", args.job_images) if args.job_images else None
    queue = f"line-beside-{os.getpid()}"
    triton = TritonServer(repository=repo, log_file=work / "triton.log")
    with triton.start(timeout=600):
        gw = GatewayProcess(triton.grpc_url, work, ENHANCE_DIR=args.enhance_dir or str(work / "enhance"),
                            PAIRING_WINDOW_MS="400",
                            # the deployed topology: the gateway submits, a worker process of its own runs the job
                            BATCH_BROKER_URL=RABBIT, BATCH_QUEUE=queue, BATCH_ALLOWED_ROOTS=str(work),
                            BATCH_DATA_DIR=str(work / "batch"))
        worker = Worker({k: v for k, v in gw.env.items() if k != "OUTBOX_PATH"}, work / "batch_worker.log",
                        concurrency=6) if job_dir else None
        try:
            gw.start()
            url = gw.url
            if worker:
                worker.start()
            line = Line(url, images, args.boards_per_s)
            line.register()
            asyncio.run(line.run(for_seconds(5)))  # warm-up: first-run allocations in every model
            # rounds of (line alone, line + the job), pooled: a p99 over a few hundred boards
            # each, and drift on the machine falls on both scenarios alike
            alone_runs, beside_runs, jobs, floor_runs, burners = [], [], [], [], []
            for k in range(args.rounds if job_dir else 1):
                alone_runs.append(asyncio.run(line.run(for_seconds(args.seconds))))
                print(f"round {k + 1} line alone:", alone_runs[-1].summary())
                if job_dir:
                    # submitted at once: every board of this run was captured while the job ran
                    beside, job = asyncio.run(line_beside_job(url, line, job_dir, 0.0))
                    beside_runs.append(beside)
                    jobs.append(job)
                    print(f"round {k + 1} line + batch job:", beside.summary(), job)
                    if args.floor:
                        with IdleBurner(repo) as burner:
                            floor_runs.append(asyncio.run(line.run(for_seconds(job["total_s"]))))
                        burners.append(burner.result)
                        print(f"round {k + 1} line + idle burner:", floor_runs[-1].summary(), burner.result)
                    t0 = min(beside.sent_at)
                    print("  slowest frames (s after the run's start, ms):",
                          sorted(((round(t - t0, 1), round(ms)) for t, ms in zip(beside.sent_at, beside.frames_ms)),
                                 key=lambda x: -x[1])[:8])
            res["alone"] = LineRun.pooled(alone_runs).summary()
            if job_dir:
                res["job"] = LineRun.pooled(beside_runs).summary() | {"job": jobs[-1], "jobs": jobs}
                res["rounds"] = [{"alone": a.summary(), "job": b.summary()} for a, b in zip(alone_runs, beside_runs)]
            if floor_runs:
                res["floor"] = LineRun.pooled(floor_runs).summary() | {"burners": burners}
                for r, f in zip(res["rounds"], floor_runs):
                    r["floor"] = f.summary()
            if batch:
                beside, enh = asyncio.run(line_beside_enhancement(url, line, batch, args.warmup))
                res["enhance"] = beside.summary() | {"batch": enh}
                print("line + enhancement batch:", res["enhance"])
        finally:
            if worker:
                worker.stop()
            gw.stop()
            if job_dir:
                delete_queue(queue)
    return res


# docs/benchmarks.md sections: this bench's own, and the line beside the job that ends `make bench-batch`
SECTIONS = {"line-beside": ("bench-line-beside", "The line beside other work"),
            "batch-line": ("bench-batch", "Batch engine: the line with and without the job")}


def report(r: dict) -> str:
    a = r["args"]
    net = "narrow test GFPGAN" if a["narrow"] else "full-size GFPGAN v1.4 (86 M params, random init)"
    rows = [("line alone", r["alone"])]
    rounds = len(r.get("rounds", [])) or 1
    if "job" in r:
        jobs = r["job"]["jobs"]
        secs = [j["total_s"] for j in jobs]
        rows.append((f"line + a {jobs[0]['images']}-image batch job (1 worker; {len(jobs)} x: done in "
                     f"{min(secs):.0f}-{max(secs):.0f} s, {jobs[0]['images'] / max(secs):.1f}-"
                     f"{jobs[0]['images'] / min(secs):.1f} img/s)", r["job"]))
        rows[0] = (f"line alone ({rounds} x {a['seconds']:g} s, before each job)", r["alone"])
    if "floor" in r:
        b = r["floor"]["burners"]
        rows.append((f"line + the idle-class burner, the floor ({len(b)} x as long as the job; bare onnxruntime, "
                     f"{b[0]['procs']} x {b[0]['threads']} thread, {min(x['img_s'] for x in b):.0f}-"
                     f"{max(x['img_s'] for x in b):.0f} img/s, {'/'.join(b[0]['policy'])})", r["floor"]))
    if "enhance" in r:
        enh = r["enhance"]["batch"]
        rows.append((f"line + a {a['photos']}-photo enhancement batch (upload {enh['upload_s']:.1f} s, "
                     f"enhanced in {enh['total_s']:.0f} s)", r["enhance"]))
    make, title = SECTIONS[a["section"]]
    flags = "" if a["section"] == "line-beside" else " --photos 0 --section " + a["section"]
    lines = [f"## {title} (`make {make}`)", "",
             f"Command: `make {make}` (= `python -m bench.line_beside{flags}`), commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}.",
             f"Machine: {machine()}. One uvicorn worker (SQLite, in-process pairing), the CPU Triton server on the "
             f"same cores. The line: two cameras, {a['boards_per_s']:g} boards/s (each board's left and right "
             f"640x480 JPEGs posted to `/v1/inspect` together, on a fixed clock).",
             f"The batch job: {a['job_images']} 640x480 JPEGs from a folder, `kind=inspect`, one Celery worker "
             f"process over RabbitMQ (`python -m batch worker --concurrency 6`, congestion controller on), "
             f"Triton priority level 2 (the line's boards are at 1), in the batch lane." if "job" in r else None,
             f"The enhancement batch: {a['photos']} photos of {a['photo_width']}x{a['photo_width'] * 3 // 4} "
             f"({r['photo_bytes'] / 2**20:.0f} MB in all), options {json.dumps(ENHANCE_OPTIONS)}, {net}."
             if "enhance" in r else None,
             "", "| scenario | boards | frame p50 ms | frame p99 ms | board p50 ms | board p99 ms | board max ms "
                 f"| over {BUDGET_MS} ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s['boards']} | {s['frame_p50']:.0f} | {s['frame_p99']:.0f} | {s['board_p50']:.0f} "
                     f"| {s['board_p99']:.0f} | {s['board_max']:.0f} | {s['over_budget']} | {s['errors']} |")
    lines.append("")
    if "job" in r:
        j = r["job"]
        per_round = ", ".join(f"{x['job']['board_p99'] / x['alone']['board_p99']:.2f}x" for x in r["rounds"])
        alone_p99 = [x["alone"]["board_p99"] for x in r["rounds"]]
        lines.append(f"- Board p99 beside the batch job (pooled over {rounds} rounds): "
                     f"{j['board_p99'] / r['alone']['board_p99']:.2f}x the line alone (target <= 1.2x; round by "
                     f"round {per_round}); {'within' if j['board_p99'] <= BUDGET_MS else 'over'} the "
                     f"{BUDGET_MS} ms budget. The line alone's own spread, round by round: board p99 "
                     f"{', '.join(f'{v:.0f}' for v in alone_p99)} ms ({max(alone_p99) / min(alone_p99):.2f}x between "
                     f"its extremes). Jobs: {sum(x['completed'] for x in j['jobs'])} items completed, "
                     f"{sum(x['failed'] for x in j['jobs'])} failed. The job's chunks run in the batch lane "
                     f"(`pcb_inspect_batch`: the served detector's own instances under SCHED_IDLE, "
                     f"serving/batch_lane.py).")
    if "floor" in r:
        f = r["floor"]
        per_round = ", ".join(f"{x['floor']['board_p99'] / x['alone']['board_p99']:.2f}x" for x in r["rounds"])
        lines.append(f"- The floor: board p99 beside the idle-class burner (pooled) {f['board_p99'] / r['alone']['board_p99']:.2f}x "
                     f"the line alone (round by round {per_round}); the batch job's "
                     f"{r['job']['board_p99'] / f['board_p99']:.2f}x the floor. The burner is the lane's own detector "
                     f"under SCHED_IDLE with nothing around it (bench/idle_burner.py): what is left beside it is "
                     f"what sharing these cores costs the line, whatever runs on them.")
    if "enhance" in r:
        e = r["enhance"]
        lines.append(f"- Board p99 beside the enhancement batch: {e['board_p99'] / r['alone']['board_p99']:.2f}x the "
                     f"line alone; {'within' if e['board_p99'] <= BUDGET_MS else 'over'} the {BUDGET_MS} ms budget. "
                     f"{e['batch']['completed']} photos completed, {e['batch']['failed']} failed.")
    for name, key in (("line alone", "alone"), ("beside the batch job", "job"), ("beside the idle-class burner", "floor"),
                      ("beside the enhancement", "enhance")):
        if key not in r:
            continue
        t = r[key]
        lines.append(f"- Slowest 1 % of frames, {name}: {t['tail_client']:.0f} ms at the client, of which the gateway "
                     f"counted {t['tail_gateway_total']:.0f} ms ({t['tail_inference']:.0f} ms Triton, "
                     f"{t['tail_pairing']:.0f} ms waiting for the other side); the rest is the multipart upload "
                     f"and the outbox write ({t['outbox_over_50ms']} of {t['outbox_writes']} durable outbox writes "
                     f"took over 50 ms).")
    return "\n".join(x for x in lines if x is not None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.line_beside", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards-per-s", type=float, default=5.0, help="5 boards/s = 10 frames/s from two cameras")
    ap.add_argument("--seconds", type=float, default=20, help="the line-alone reference, per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (line alone, line + the job), pooled")
    ap.add_argument("--photos", type=int, default=20, help="the enhancement batch (0: skip it)")
    ap.add_argument("--job-images", type=int, default=1000, help="the batch job (0: skip it)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the idle-class burner rounds (the floor, bench/idle_burner.py)")
    ap.add_argument("--photo-width", type=int, default=3000)
    ap.add_argument("--warmup", type=float, default=3, help="seconds of line before the batch is uploaded")
    ap.add_argument("--enhance-dir", help="where the gateway keeps photos and results (default: under build/)")
    ap.add_argument("--narrow", action="store_true", help="the narrow test GFPGAN (quick)")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    ap.add_argument("--section", choices=sorted(SECTIONS), default="line-beside", help="which section it writes")
    args = ap.parse_args(argv)
    r = run(args)
    text = report(r)
    print(text)
    if not args.no_write:
        write_section(args.section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

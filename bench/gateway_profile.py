"""``make bench-profile``: where the gateway's own time goes on the line's path, by py-spy.

Triton and one uvicorn gateway (SQLite, in-process pairing, as ``make demo``) on this
machine; the line (bench/line_load.py: two cameras, boards on a clock) posts to
``/v1/inspect`` while py-spy samples the gateway process (all threads, idle ones left out).
The report is the share of the gateway's busy samples spent under each of its costs: the
functions named in COSTS, matched on py-spy's collapsed stacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import OUT, bench_images, bench_repository, git_rev, machine, write_section
from bench.gateway_process import GatewayProcess
from bench.line_load import Line, for_seconds
from serving.cpu_server import TritonServer

# (label, substring of a stack frame "function (file:line)"). A sample is charged to the
# cost of its innermost matching frame, so the shares do not overlap: "FastAPI/Starlette"
# is the framework's own code around the route, "HTTP (uvicorn + httptools)" the server's.
COSTS = (
    ("multipart parsing", "multipart"),
    ("outbox write (SQLite + fsync)", "Outbox._commit_group"),
    ("outbox write (SQLite + fsync)", "Outbox._put"),
    ("outbox write (SQLite + fsync)", "Outbox._seen"),
    ("outbox drain to the database", "Outbox._claim"),
    ("outbox drain to the database", "Outbox._settle"),
    ("outbox drain to the database", "services/db_writer.py"),
    ("outbox drain to the database", "services/drainer.py"),
    ("embedded batch worker (Celery/kombu)", "kombu"),
    ("idempotency records", "services/idempotency.py"),
    ("pairing store", "services/pair_store.py"),
    ("Triton client (gRPC)", "grpc"),
    ("JSON encoding", "json/"),
    ("pydantic validation/serialisation", "pydantic"),
    ("image store", "services/image_store.py"),
    ("inspection service (own code)", "services/inspection.py"),
    ("routes and middleware (own code)", "gateway/"),
    ("FastAPI/Starlette", "fastapi/"),
    ("FastAPI/Starlette", "starlette/"),
    ("HTTP (uvicorn + httptools)", "uvicorn/"),
    ("thread pool hand-offs", "concurrent/futures"),
    ("asyncio", "asyncio/"),
)
# innermost frames of a thread that waits (uvloop's poll, an idle pool thread, a condition):
# py-spy cannot see that C code sleeps, so they are left out of the busy samples here
WAITING = ("Runner.run (asyncio/runners.py", "_worker (concurrent/futures/thread.py:81)", "Condition.wait (threading.py",
           "Event.wait (threading.py", "Queue.get (queue.py")


def profile(seconds: float, boards_per_s: float, env_extra: dict[str, str]) -> tuple[Counter, int]:
    repo = bench_repository(OUT / "profile_repository")
    work = OUT / "profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    triton = TritonServer(repository=repo, log_file=work / "triton.log")
    with triton.start(timeout=300), GatewayProcess(triton.grpc_url, work, **env_extra) as gw:
        line = Line(gw.url, bench_images(16), boards_per_s)
        line.register()
        asyncio.run(line.run(for_seconds(3)))  # warm
        raw = work / "gateway.txt"
        assert gw.proc is not None
        spy = subprocess.Popen([shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy", "record",
                                "--pid", str(gw.proc.pid), "--format", "raw", "--rate", "250",
                                "--duration", str(int(seconds)), "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = asyncio.run(line.run(for_seconds(seconds)))
        spy.wait(seconds + 60)
    print("line:", run.summary())
    return collapse(raw)


def collapse(raw: Path) -> tuple[Counter, int]:
    """Samples per cost (each sample charged to its innermost matching frame; "other" when
    none matches) and busy samples in all."""
    per_cost: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(w) for w in WAITING):
            continue
        n = int(count)
        total += n
        per_cost[_innermost(frames)] += n
    return per_cost, total


def _innermost(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, needle in COSTS:
            if needle in frame:
                return label
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_profile")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--boards-per-s", type=float, default=5)
    ap.add_argument("--save", type=Path, help="also keep this run's samples per cost as JSON")
    ap.add_argument("--before", type=Path, help="a run saved with --save (e.g. at an older commit), shown beside")
    args = ap.parse_args(argv)
    per_cost, total = profile(args.seconds, args.boards_per_s, {})
    now = {"commit": git_rev(), "total": total, "seconds": args.seconds, "costs": dict(per_cost)}
    if args.save:
        args.save.write_text(json.dumps(now))
    before = json.loads(args.before.read_text()) if args.before else None
    for label, n in per_cost.most_common():
        print(f"{label:<38} {100 * n / max(total, 1):5.1f} %")
    write_section("profile", report(now, before, args.boards_per_s))
    return 0


def report(now: dict, before: dict | None, boards_per_s: float) -> str:
    runs = [r for r in (before, now) if r]
    per_s = [r["total"] / r["seconds"] / 250 for r in runs]  # busy share of one core
    lines = ["## The gateway's own path, profiled (`make bench-profile`)", "",
             f"Command: `make bench-profile` (= `python -m bench.gateway_profile`), "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {machine()}.",
             f"py-spy 250 Hz on the gateway process (all threads, waits left out) while the line posts "
             f"{boards_per_s:g} boards/s (two frames each) to `/v1/inspect`. Each sample is charged to its innermost "
             "recognised frame (`COSTS` in bench/gateway_profile.py), so a column adds up to 100 % of that run's busy "
             "samples; the last row is the gateway's busy time as a share of one core.", "",
             "| cost | " + " | ".join(f"commit {r['commit']}" for r in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    labels = sorted({k for r in runs for k in r["costs"]}, key=lambda k: -now["costs"].get(k, 0))
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{100 * r['costs'].get(label, 0) / max(r['total'], 1):.1f} %"
                                                   for r in runs) + " |")
    lines.append("| **gateway busy, share of one core** | " + " | ".join(f"{100 * p:.1f} %" for p in per_s) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

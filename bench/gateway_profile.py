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
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import OUT, ROOT, bench_images, bench_repository, git_rev, machine, write_section
from bench.line_load import ADMIN, Line, for_seconds
from serving.cpu_server import TritonServer, free_port, wait_http

# (label, substring of a stack frame "function (file)") - the costs issue 16 asks about first
COSTS = (
    ("multipart parsing", "multipart"),
    ("outbox write (SQLite + fsync)", "put (gateway/services/outbox.py)"),
    ("outbox drain to the database", "drain_once (gateway/services/outbox.py)"),
    ("embedded batch worker (Celery/kombu)", "kombu"),
    ("idempotency records", "services/idempotency.py"),
    ("pairing store", "services/pair_store.py"),
    ("Triton client (gRPC)", "inference/aio.py"),
    ("JSON encoding", "json/encoder.py"),
    ("pydantic validation/serialisation", "pydantic"),
    ("image store", "services/image_store.py"),
    ("HTTP parsing (httptools)", "httptools"),
    ("asyncio event loop", "asyncio/base_events.py"),
)


def profile(seconds: float, boards_per_s: float, env_extra: dict[str, str]) -> tuple[Counter, int]:
    repo = bench_repository(OUT / "profile_repository")
    work = OUT / "profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    triton = TritonServer(repository=repo, ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()},
                          log_file=work / "triton.log")
    with triton.start(timeout=300):
        port = free_port()
        env = {**os.environ, "TRITON_URL": triton.grpc_url, "DATABASE_URL": f"sqlite:///{work / 'gw.db'}",
               "OUTBOX_PATH": str(work / "outbox.db"), "IMAGE_DIR": str(work / "images"), "IMAGE_POLICY": "none",
               "ADMIN_TOKEN": ADMIN["Authorization"][7:], "RATE_LIMIT_PER_S": "0", "LOG_LEVEL": "WARNING",
               **env_extra}
        gw = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--port", str(port),
                               "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/health", 120, gw)
            line = Line(url, bench_images(16), boards_per_s)
            line.register()
            asyncio.run(line.run(for_seconds(3)))  # warm
            raw = work / "gateway.txt"
            spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(gw.pid), "--format", "raw",
                                    "--rate", "250", "--duration", str(int(seconds)), "--output", str(raw),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = asyncio.run(line.run(for_seconds(seconds)))
            spy.wait(seconds + 60)
        finally:
            gw.terminate()
            gw.wait(20)
    print("line:", run.summary())
    return collapse(raw)


def collapse(raw: Path) -> tuple[Counter, int]:
    """Samples per cost (a sample counts once per cost on its stack) and busy samples in all."""
    per_cost: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        for label, needle in COSTS:
            if needle in stack:
                per_cost[label] += n
    return per_cost, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_profile")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--boards-per-s", type=float, default=5)
    ap.add_argument("--label", default="now", help="the row's name in the report")
    args = ap.parse_args(argv)
    per_cost, total = profile(args.seconds, args.boards_per_s, {})
    rows = sorted(per_cost.items(), key=lambda kv: -kv[1])
    for label, n in rows:
        print(f"{label:<38} {100 * n / max(total, 1):5.1f} %")
    lines = ["## The gateway's own path, profiled (`make bench-profile`)", "",
             f"Command: `make bench-profile` (= `python -m bench.gateway_profile`), commit {git_rev()}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {machine()}.",
             f"py-spy 250 Hz on the gateway process (idle threads left out) for {args.seconds:g} s while the line "
             f"posts {args.boards_per_s:g} boards/s (two frames each) to `/v1/inspect`; {total} busy samples.",
             "A sample counts under every cost on its stack, so shares overlap (the event loop holds the rest).",
             "", "| cost | share of busy samples |", "|---|---:|"]
    lines += [f"| {label} | {100 * n / max(total, 1):.1f} % |" for label, n in rows]
    write_section("profile", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Adaptive concurrency in the real engine: ``python -m batch run`` (embedded worker,
SQLite) against the real Triton server runs a job with the congestion controller steering
its chunks in flight from Triton's own signals (batch round trips, queue time from the
model statistics), and writes the controller's trace (``BATCH_TRACE_DIR``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from inference.contract import BATCH_LANE_MODEL
from inference.repository_api import RepositoryAPI
from pcb.synthetic import render_board
from tests.conftest import ROOT, encode

# 40 chunks: the first epoch (4), then trials twice as long (8 at 2, 12 at 3, 16 at 4)
IMAGES, CHUNK, CEILING = 160, 4, 4


def test_a_job_runs_under_the_controller_and_its_trace_is_recorded(triton, tmp_path):
    folder = tmp_path / "boards"
    folder.mkdir()
    boards = [encode(render_board(1200 + i).image) for i in range(8)]
    for i in range(IMAGES):
        (folder / f"b{i:03d}.jpg").write_bytes(boards[i % len(boards)])
    trace_dir = tmp_path / "trace"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}", "TRITON_URL": triton.grpc_url,
           "BATCH_BROKER_URL": "memory://", "BATCH_DATA_DIR": str(tmp_path / "data"),
           "BATCH_CHUNK_SIZE": str(CHUNK), "BATCH_CONCURRENCY": "1", "BATCH_MAX_INFLIGHT": str(CEILING),
           "BATCH_TRACE_DIR": str(trace_dir)}
    stats = RepositoryAPI(triton.http_url)
    before, line_before = stats.counts(BATCH_LANE_MODEL), stats.counts("pcb_inspect")
    p = subprocess.run([sys.executable, "-m", "batch", "run", str(folder), "--out", str(tmp_path / "res")],
                       cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    items = json.loads((tmp_path / "res" / "results.json").read_text())["items"]
    assert len(items) == IMAGES and all(i["state"] == "completed" and i["result"]["verdict"] for i in items)
    # the read-ahead and the early slot release send every image once, no more
    # (through the batch lane: the line's own instances never saw the job)
    sent = stats.counts_after(BATCH_LANE_MODEL, before, IMAGES + 1, timeout_s=1).inference_count \
        - before.inference_count
    # (two dispatchers taking one chunk on SQLite ran it twice under CPU load: 164-172 of 160,
    # until the take became a conditional write, batch/store.py take_dispatches)
    assert sent == IMAGES, p.stderr[-4000:]
    assert stats.counts("pcb_inspect").inference_count == line_before.inference_count

    [trace_file] = trace_dir.glob("*.jsonl")
    steps = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert steps[0]["reason"] == "start" and steps[0]["limit"] == 1  # seeded with the configured pick
    decisions = steps[1:]
    assert len(decisions) >= 3, steps
    # the first epoch's throughput has nothing to beat: one more chunk in flight
    assert decisions[0]["reason"] == "increase" and decisions[0]["limit"] == 2
    assert all(1 <= s["limit"] <= CEILING for s in steps)
    assert all(s["items_per_s"] > 0 and s["latency_ms"] > 0 for s in decisions)
    assert all(s["reason"] in ("increase", "hold", "probe", "retreat", "probe_down", "trim", "restore", "latency", "queue") for s in decisions)
    # Triton's statistics were read: queue time per request known for the later epochs
    assert any(s["queue_ms"] is not None for s in decisions), decisions
    assert [s["t"] for s in steps] == sorted(s["t"] for s in steps)

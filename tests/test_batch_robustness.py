"""Leases in the real engine: a healthy chunk much slower than ``BATCH_LEASE_S`` is renewed
by its worker and processed exactly once, while the lease sweeper runs all along. The engine
is ``python -m batch run`` (embedded: in-memory Celery transport, a worker thread, the
sweeper, SQLite) against a real Triton server whose post-processing model is made slow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import select

from batch.store import JobStore
from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL
from inference.repository_api import RepositoryAPI
from pcb.synthetic import render_board
from store.models import BatchChunk
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, encode, start_triton

LEASE_S = 1.0
DELAY_S = 2.5  # each pcb_detector execute: a chunk takes several leases

SLOW_MODEL = f"""
import importlib.util
import os
import time

_spec = importlib.util.spec_from_file_location("detector_model", os.path.join(os.path.dirname(__file__),
                                                                                  "model_fast.py"))
_fast = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fast)


class TritonPythonModel(_fast.TritonPythonModel):
    def execute(self, requests):
        time.sleep({DELAY_S})
        return super().execute(requests)
"""


@pytest.fixture(scope="module")
def slow_triton(repository, tmp_path_factory):
    """The pipeline repository with a pcb_detector (and its batch lane) that sleeps before each batch."""
    repo = tmp_path_factory.mktemp("slow") / "model_repository"
    shutil.copytree(repository, repo)
    for model in ("pcb_detector", BATCH_LANE_DETECTOR):
        version = repo / model / "1"
        (version / "model.py").rename(version / "model_fast.py")
        (version / "model.py").write_text(SLOW_MODEL)
    srv = start_triton(repo, tmp_path_factory.mktemp("slow_log") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_a_chunk_slower_than_its_lease_is_processed_exactly_once(slow_triton, tmp_path):
    triton = slow_triton
    folder = tmp_path / "boards"
    folder.mkdir()
    for i in range(4):
        (folder / f"b{i}.jpg").write_bytes(encode(render_board(700 + i).image))
    # one rule for every path: a strip in a job fails alone, before Triton
    (folder / "strip.png").write_bytes(encode(np.full((1, 100_000, 3), 90, np.uint8), ".png"))
    stats = RepositoryAPI(triton.http_url)

    def inspected() -> int:  # the engine's model: the batch lane
        return stats.counts(BATCH_LANE_MODEL).inference_count

    db = tmp_path / "jobs.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", "TRITON_URL": triton.grpc_url,
           "BATCH_BROKER_URL": "memory://", "BATCH_DATA_DIR": str(tmp_path / "data"),
           "BATCH_LEASE_S": str(LEASE_S), "BATCH_CHUNK_SIZE": "2", "BATCH_CONCURRENCY": "2"}
    before = inspected()
    p = subprocess.run([sys.executable, "-m", "batch", "run", str(folder), "--out", str(tmp_path / "res")],
                       cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    items = {i["name"]: i for i in json.loads((tmp_path / "res" / "results.json").read_text())["items"]}
    assert items["strip.png"]["state"] == "failed" and items["strip.png"]["error"].startswith("image_aspect_ratio")
    boards = [items[f"b{i}.jpg"] for i in range(4)]
    assert all(b["state"] == "completed" and b["result"]["verdict"] for b in boards), [b.get("error") for b in boards]

    store = JobStore(make_sessionmaker(make_engine(f"sqlite:///{db}")))
    [job] = store.jobs()
    rows = store.items(job.id)
    # the chunks really were slower than the lease (the per-item time is the batch's share)
    slowest_batch_s = max(r.duration_ms * 2 for r in rows if r.state == "completed") / 1000
    assert slowest_batch_s > 1.5 * LEASE_S, slowest_batch_s
    # exactly once: one delivery per chunk, one claim per item, one Triton request per board
    with store.sessions() as s:
        chunks = list(s.scalars(select(BatchChunk).where(BatchChunk.job_id == job.id)))
    assert [(c.state, c.dispatches) for c in chunks] == [("done", 1)] * 3
    assert [r.attempts for r in rows] == [1] * 5
    assert inspected() - before == 4
    assert "requeued" not in p.stderr and "lease lost" not in p.stderr

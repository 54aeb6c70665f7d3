"""Hot-swap under traffic: a client loop keeps inspecting while a new detector version is
exported, loaded, promoted and the old one unloaded. Zero failed requests; the responses
switch to the new version and stay there."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from export import onnx_target
from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL, SINGLE_MODEL
from inference.sync import SyncTriton
from pcb.synthetic import render_board
from serving import batch_lane
from serving.admin import AdminError, ModelAdmin
from tests.conftest import WEIGHTS, encode, make_repository, start_triton


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory):
    """Its own repository and server: this test rewrites the detector's versions."""
    repo = make_repository(tmp_path_factory.mktemp("swap") / "model_repository")
    srv = start_triton(repo, tmp_path_factory.mktemp("swap_log") / "triton.log")
    try:
        yield srv, repo
    finally:
        srv.stop()


class Traffic(threading.Thread):
    def __init__(self, url: str, images: list[bytes], model: str = SINGLE_MODEL):
        super().__init__(daemon=True)
        self.triton = SyncTriton(url)
        self.images, self.stop, self.model = images, threading.Event(), model
        self.versions: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                [answer] = self.triton.inspect_many([self.images[i % len(self.images)]], self.model)
                if isinstance(answer, Exception):
                    raise answer
                self.versions.append(answer.detector_version)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.errors.append(repr(e))
            i += 1


def test_promote_new_version_under_traffic(own_triton):
    srv, repo = own_triton
    admin = ModelAdmin(srv.http_url, repo)
    images = [encode(render_board(500 + i).image) for i in range(8)]
    # two line clients and one on the batch lane, which follows every step of the swap
    loops = [Traffic(srv.grpc_url, images) for _ in range(2)] + [Traffic(srv.grpc_url, images, BATCH_LANE_MODEL)]
    for t in loops:
        t.start()
    try:
        time.sleep(1.0)
        version, _ = onnx_target.add_version(repo, WEIGHTS, imgsz=320, max_batch=16)
        assert version == 2
        assert admin.served("pcb_detector") == [1]  # exporting alone changes nothing served
        assert admin.load("pcb_detector", 2) == [1, 2]
        time.sleep(1.0)
        assert admin.promote("pcb_detector", 2) == [2]
        time.sleep(1.5)
    finally:
        for t in loops:
            t.stop.set()
        for t in loops:
            t.join(30)

    errors = [e for t in loops for e in t.errors]
    assert errors == [], errors[:5]
    for t in loops:
        assert t.versions[0] == 1
        assert t.versions[-1] == 2
        first_new = t.versions.index(2)
        assert set(t.versions[first_new:]) == {2}, "went back to version 1 after the switch"
        assert len(t.versions) > 10
    rows = {r["model"]: r for r in admin.describe()}
    assert rows["pcb_detector"]["ready"] == [2]
    assert rows["pcb_detector"]["on_disk"] == [1, 2]
    # and the policy on disk says so, for the next restart
    assert admin.served("pcb_detector") == [2]
    # the lane serves what the line serves, and keeps only that on disk
    assert rows[BATCH_LANE_DETECTOR]["ready"] == [2] and rows[BATCH_LANE_DETECTOR]["on_disk"] == [2]


def test_admin_cli_lists_and_refuses(own_triton):
    srv, repo = own_triton
    run = [sys.executable, "-m", "serving.admin", "--url", srv.http_url, "--repository", str(repo)]
    out = subprocess.run(run + ["list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("pcb_detector"))
    assert "[1, 2]" in row and "[2]" in row
    bad = subprocess.run(run + ["promote", "pcb_detector", "42"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no version [42] on disk" in bad.stderr


def test_rollback_and_refusals(own_triton):
    srv, repo = own_triton
    admin = ModelAdmin(srv.http_url, repo)
    assert admin.rollback("pcb_detector") == [1]
    client = SyncTriton(srv.grpc_url)
    assert client.inspect(encode(render_board(1).image)).detector_version == 1
    [lane] = client.inspect_many([encode(render_board(1).image)], BATCH_LANE_MODEL)
    assert lane.detector_version == 1
    with pytest.raises(AdminError, match="follows pcb_detector"):  # derived: never promoted on its own
        admin.promote(BATCH_LANE_DETECTOR, 2)
    with pytest.raises(AdminError, match="no version"):
        admin.promote("pcb_detector", 99)
    with pytest.raises(AdminError, match="no version"):
        admin.rollback("pcb_detector")
    with pytest.raises(AdminError, match="serve no version"):
        admin.unload("pcb_detector", 1)


def test_a_lane_that_cannot_follow_is_dropped_and_the_next_promotion_brings_it_back(own_triton, monkeypatch):
    srv, repo = own_triton
    admin = ModelAdmin(srv.http_url, repo)
    client = SyncTriton(srv.grpc_url)
    board = encode(render_board(2).image)

    def broken(_repo):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(batch_lane, "sync", broken)
        assert admin.promote("pcb_detector", 2) == [2]  # the line's swap stands
    assert client.inspect(board).detector_version == 2
    assert not client.model_ready(BATCH_LANE_MODEL) and not (repo / BATCH_LANE_DETECTOR).exists()
    assert admin.promote("pcb_detector", 1) == [1]
    [lane] = client.inspect_many([board], BATCH_LANE_MODEL)
    assert lane.detector_version == 1
    # a whole unload of the detector takes the lane with it; a load brings both back
    admin.unload("pcb_detector")
    assert not client.model_ready(BATCH_LANE_MODEL)
    admin.load("pcb_detector")
    [lane] = client.inspect_many([board], BATCH_LANE_MODEL)
    assert lane.detector_version == 1 and client.inspect(board).detector_version == 1

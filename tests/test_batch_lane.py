"""The batch lane (serving/batch_lane.py): the served detector again, under SCHED_IDLE, behind
``pcb_inspect_batch``. On disk it mirrors what the detector serves; in the real Triton it
answers exactly what ``pcb_inspect`` answers, its instances step aside for the line's, and the
engine falls back to ``pcb_inspect`` (retrying, never failing items; one image at a time on the
CPU, whose detector has no priority levels) when it is not loaded.
The swap under traffic is in test_hot_swap.py; the engine's use of it in test_batch_adaptive.py."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from batch import processors
from inference.contract import BATCH_LANE_DETECTOR, BATCH_LANE_MODEL, SINGLE_MODEL
from inference.errors import InferenceError
from inference.repository_api import RepositoryAPI
from inference.sync import SyncTriton
from pcb.synthetic import render_board
from serving import batch_lane
from serving.cpu_priority import describe
from serving.repository import DETECTOR, LANE_MODELS, PREPROCESS, read_config, served_versions, versions
from tests.conftest import encode
from tests.triton_helpers import detections, stub_pids


def test_the_lane_mirrors_the_served_detector_on_disk(repository):
    det, lane = read_config(repository / DETECTOR), read_config(repository / BATCH_LANE_DETECTOR)
    assert versions(repository / BATCH_LANE_DETECTOR) == served_versions(det, versions(repository / DETECTOR)) == [1]
    assert lane.name == BATCH_LANE_DETECTOR and lane.parameters["cpu_priority"].string_value == "idle"
    # the same model otherwise: tensors, batching, instances, warm-up, side parameters
    for field in ("input", "output", "dynamic_batching", "instance_group", "model_warmup", "max_batch_size"):
        assert getattr(lane, field) == getattr(det, field), field
    assert {k: v for k, v in lane.parameters.items() if k != "cpu_priority"} == \
        {k: v for k, v in det.parameters.items() if k != "cpu_priority"}
    # the network is a hard link, not a second copy
    assert os.stat(repository / DETECTOR / "1" / "model.onnx").st_ino == \
        os.stat(repository / BATCH_LANE_DETECTOR / "1" / "model.onnx").st_ino
    ens, line = read_config(repository / BATCH_LANE_MODEL), read_config(repository / SINGLE_MODEL)
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [BATCH_LANE_DETECTOR]
    assert ens.output == line.output and ens.input == line.input


def test_sync_follows_the_policy_and_leaves_the_split_layout_alone(repository, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(repository, repo)
    v1 = repo / DETECTOR / "1"
    shutil.copytree(v1, repo / DETECTOR / "2")  # a second export of the same network
    cfg_text = (repo / DETECTOR / "config.pbtxt").read_text()
    (repo / DETECTOR / "config.pbtxt").write_text(cfg_text.replace("versions: 1", "versions: 2"))
    assert batch_lane.sync(repo) == [2]
    assert batch_lane.sync(repo) == [2]  # again: nothing to do, nothing broken
    assert versions(repo / BATCH_LANE_DETECTOR) == [1, 2]  # 1 stays until Triton let it go
    assert served_versions(read_config(repo / BATCH_LANE_DETECTOR), [1, 2]) == [2]
    assert batch_lane.prune(repo) == [1] and versions(repo / BATCH_LANE_DETECTOR) == [2]
    # the same number exported again (make repository re-exports version 1): the lane takes the new files
    onnx = repo / DETECTOR / "2" / "model.onnx"
    data = onnx.read_bytes()
    onnx.unlink()
    onnx.write_bytes(data + b"\0")  # another file, not the lane's hard link
    assert batch_lane.sync(repo) == [2]
    assert os.path.samefile(onnx, repo / BATCH_LANE_DETECTOR / "2" / "model.onnx")
    # syncs at once (two gateway workers, the CLI, an export) leave one whole lane
    shutil.rmtree(repo / BATCH_LANE_DETECTOR)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: batch_lane.sync(repo), range(4))) == [[2]] * 4
    assert versions(repo / BATCH_LANE_DETECTOR) == [2]
    assert os.path.samefile(onnx, repo / BATCH_LANE_DETECTOR / "2" / "model.onnx")
    assert (repo / BATCH_LANE_DETECTOR / "2" / "model.py").is_file()
    assert read_config(repo / BATCH_LANE_DETECTOR).name == BATCH_LANE_DETECTOR
    # the split (GPU) layout has no lane: its detector is not a whole side
    (repo / PREPROCESS).mkdir()
    (repo / PREPROCESS / "config.pbtxt").write_text('name: "pcb_preprocess"\n')
    assert batch_lane.sync(repo) == []
    assert not any((repo / m).exists() for m in LANE_MODELS)


def test_the_gpu_repository_never_copies_the_lane(repository, tmp_path):
    from serving.gpu_repository import assemble

    assert (repository / BATCH_LANE_MODEL).is_dir()
    copied = assemble(tmp_path / "gpu", source=repository)
    assert not set(copied) & set(LANE_MODELS) and not any((tmp_path / "gpu" / m).exists() for m in LANE_MODELS)


def test_the_lane_answers_what_the_line_answers_on_idle_cpu(triton):
    client = SyncTriton(triton.grpc_url)
    boards = [encode(render_board(900 + i).image) for i in range(6)]
    line = client.inspect_many(boards)
    lane = client.inspect_many(boards, BATCH_LANE_MODEL)
    for a, b in zip(line, lane, strict=True):
        assert a.verdict_code == b.verdict_code and a.detector_version == b.detector_version
        assert np.allclose(detections(a), detections(b), atol=1e-4)
    stubs = stub_pids(triton)
    idle = [t for pid in stubs[BATCH_LANE_DETECTOR] for t in describe(pid)]
    assert idle and all(policy == os.SCHED_IDLE for _, policy, _ in idle)
    assert all(policy == os.SCHED_OTHER for pid in stubs[DETECTOR] for _, policy, _ in describe(pid))
    assert processors.inspect_model(client) == BATCH_LANE_MODEL


def test_without_the_lane_the_engine_uses_pcb_inspect_and_retries_meanwhile(triton, tmp_path):
    api, client = RepositoryAPI(triton.http_url), SyncTriton(triton.grpc_url)
    board = encode(render_board(950).image)
    processors._lane_seen.clear()
    held = processors.InspectProcessor(client)
    assert held.model == BATCH_LANE_MODEL
    try:
        api.unload(BATCH_LANE_MODEL)
        api.unload(BATCH_LANE_DETECTOR)
        # a chunk already on its way to the lane: retried later (Transient), never a failed item
        [gone] = client.inspect_many([board], BATCH_LANE_MODEL)
        assert isinstance(gone, InferenceError) and gone.retryable, gone
        with pytest.raises(processors.Transient):
            held.run([board], ["b.jpg"], tmp_path)
        # and the retry looks again: pcb_inspect
        fresh = processors.InspectProcessor(client)
        # the CPU layout's detector has no priority levels: batch images go one at a time, so
        # the sorter's boards always find one of its two instances free
        assert fresh.model == SINGLE_MODEL and fresh.serial
        sent = []
        real = client.inspect_many
        fresh.triton = SimpleNamespace(inspect_many=lambda imgs, model: sent.append((len(imgs), model)) or real(imgs, model))
        outs = fresh.run([board] * 3, ["a.jpg", "b.jpg", "c.jpg"], tmp_path)
        assert [o["detector_version"] for o in outs] == [1, 1, 1]
        assert sent == [(1, SINGLE_MODEL)] * 3
    finally:
        api.load(BATCH_LANE_MODEL)  # an ensemble's load loads its step's model
        processors._lane_seen.clear()
    assert client.model_ready(BATCH_LANE_DETECTOR) and processors.inspect_model(client) == BATCH_LANE_MODEL

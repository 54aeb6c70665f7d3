"""Export targets: ONNX versions written into a repository, the version stamp, and the
TensorRT path checked as far as a machine without a GPU allows (dry run + config)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export import onnx_target
from export.detector_config import DetectorShape, detector_config
from serving.gpu_repository import assemble
from serving.ort_detector import OrtDetector
from serving.repository import read_config, versions
from tests.conftest import ROOT, WEIGHTS


def test_new_versions_keep_the_served_one_until_promoted(tmp_path):
    repo = tmp_path / "repo"
    v1, p1 = onnx_target.add_version(repo, WEIGHTS, 320, 16)
    v2, p2 = onnx_target.add_version(repo, WEIGHTS, 320, 16)
    assert (v1, v2) == (1, 2)
    assert versions(repo / "pcb_detector") == [1, 2]
    cfg = read_config(repo / "pcb_detector")
    assert list(cfg.version_policy.specific.versions) == [1]
    assert cfg.backend == "python" and list(cfg.dynamic_batching.preferred_batch_size) == [1]  # measured: the line first
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 0  # measured best on the CPU
    assert cfg.instance_group[0].count == 2
    # the CPU layout: the whole side in one model, encoded image in, verdict out
    assert [i.name for i in cfg.input] == ["IMAGE"] and cfg.input[0].allow_ragged_batch
    assert [o.name for o in cfg.output] == ["DETECTIONS", "CLASS_NAMES", "VERDICT", "CONFIDENCE", "version",
                                            "ANOMALY_SCORE", "ANOMALY_MAP"]
    assert cfg.parameters["letterbox"].string_value == "rect"
    assert "SideInspector" in (repo / "pcb_detector" / "2" / "model.py").read_text()
    out = OrtDetector(p2).run(np.zeros((3, 3, 320, 320), np.float32))
    assert out["version"].tolist() == [[2], [2], [2]]
    assert out["output0"].shape == (3, 16, 2100)
    rect = OrtDetector(p2).run(np.zeros((1, 3, 256, 320), np.float32))  # dynamic height/width
    assert rect["output0"].shape == (1, 16, 1680)
    assert not list((repo / "pcb_detector").glob(".*partial"))
    # every instance is warmed through Triton's request path with a real board before READY
    [warm] = cfg.model_warmup
    board = repo / "pcb_detector" / "warmup" / warm.inputs["IMAGE"].input_data_file
    assert warm.count >= 2 and list(warm.inputs["IMAGE"].dims) == [board.stat().st_size]
    assert board.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, as the cameras send


def test_a_split_repository_gets_the_split_detector(tmp_path):
    """Exported into the split (GPU) layout, the ONNX detector is the network only, between
    the pre/post-processing models: the layout comes from the repository, not a flag."""
    repo = tmp_path / "split"
    assemble(repo)
    onnx_target.add_version(repo, WEIGHTS, 320, 16)
    cfg = read_config(repo / "pcb_detector")
    assert [i.name for i in cfg.input] == ["images"] and list(cfg.input[0].dims) == [3, -1, -1]
    assert [o.name for o in cfg.output] == ["output0", "version"]
    assert "OrtDetector" in (repo / "pcb_detector" / "1" / "model.py").read_text()


def test_export_refuses_a_size_the_preprocessor_does_not_make(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "serving" / "split_layout" / "pcb_preprocess", repo / "pcb_preprocess")
    try:
        onnx_target.add_version(repo, WEIGHTS, 416, 16)
    except SystemExit as e:
        assert "imgsz 416" in str(e)
    else:
        raise AssertionError("export at 416 px into a 320 px pipeline was accepted")


def test_tensorrt_config_is_a_valid_plan_config():
    cfg = detector_config(DetectorShape(320, 16, 2100), "tensorrt", max_batch=32, versions=[3])
    again = mc.ModelConfig()
    text_format.Parse(text_format.MessageToString(cfg), again)
    assert again.platform == "tensorrt_plan" and not again.backend
    assert again.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert list(again.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]
    assert again.dynamic_batching.max_queue_delay_microseconds == 500
    # neither priority levels nor a queue policy: both switch Triton's prefetching off
    assert not again.dynamic_batching.priority_levels and not again.dynamic_batching.HasField("default_queue_policy")
    assert [o.name for o in again.output] == ["output0", "version"]
    # warmed with zeros at the camera's rect shape, the plan profile's optimum
    assert list(again.model_warmup[0].inputs["images"].dims) == [3, 256, 320]
    assert again.model_warmup[0].inputs["images"].zero_data


def test_tensorrt_export_dry_run(tmp_path):
    """The real command, up to the TensorRT build (no GPU here): ONNX exported and stamped,
    build steps printed, nothing left half-written in the repository."""
    repo = tmp_path / "gpu_repo"
    assert "pcb_inspect" in assemble(repo)
    p = subprocess.run([sys.executable, "-m", "export", "yolo", "--weights", str(WEIGHTS), "--target", "tensorrt",
                        "--fp16", "--max-batch", "32", "--repository", str(repo), "--dry-run"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "[dry-run] precision: FP16" in p.stdout
    # rect inputs: any multiple of 32 up to 320 x 320, tuned for the 640x480 camera's 256 x 320
    assert "min (1, 3, 32, 32) opt (8, 3, 256, 320) max (32, 3, 320, 320)" in p.stdout
    assert versions(repo / "pcb_detector") == []
    assert not list((repo / "pcb_detector").glob(".*"))


def test_fp16_is_refused_for_the_cpu_layout():
    p = subprocess.run([sys.executable, "-m", "export", "yolo", "--weights", str(WEIGHTS), "--target", "onnx",
                        "--fp16"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "--fp16 applies to --target tensorrt" in p.stderr

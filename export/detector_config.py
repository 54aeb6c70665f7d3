"""``config.pbtxt`` of the detector, for either layout.

CPU layout: a python-backend model running the ONNX file with onnxruntime (the PyPI
Triton server has only the python backend). GPU layout: ``tensorrt_plan``. Both have the
same tensors (``images`` in; ``output0`` and ``version`` out), dynamic batching with
preferred sizes and a bounded queue delay, a bounded queue that rejects when full (the
gateway answers 503 + Retry-After instead of letting boards go late), and instance groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from inference.contract import PRIORITY_BACKGROUND, PRIORITY_LEVELS
from serving.repository import DETECTOR

HEADER = """# Written by `python -m export yolo`. The detector: letterboxed images in, raw YOLO output
# (xywh + class scores per anchor) and the exported version number out.
"""


@dataclass(frozen=True)
class DetectorShape:
    imgsz: int
    num_outputs: int  # 4 + number of classes
    num_anchors: int


def set_runtime(cfg: mc.ModelConfig, target: str, intra_op_threads: int) -> int:
    """CPU layout: the python backend over onnxruntime; GPU layout: a TensorRT plan.
    Returns the instance kind that goes with it."""
    if target == "onnx":
        cfg.backend = "python"
        cfg.parameters["intra_op_threads"].string_value = str(intra_op_threads)
        return mc.ModelInstanceGroup.KIND_CPU
    if target == "tensorrt":
        cfg.platform = "tensorrt_plan"
        return mc.ModelInstanceGroup.KIND_GPU
    raise ValueError(f"unknown target {target!r}")


def detector_config(
    shape: DetectorShape,
    target: str,
    max_batch: int = 16,
    versions: list[int] | None = None,
    queue_delay_us: int | None = None,
    max_queue_size: int = 128,
    instances: int | None = None,
    intra_op_threads: int = 1,
) -> mc.ModelConfig:
    """Instances, CPU default, measured on 2 cores (perf_analyzer, ``pcb_inspect``, concurrency 8):
    two single-threaded onnxruntime instances served 74-76 img/s against 54-67 img/s for
    one instance with two threads - while one instance computes, the other receives its
    batch. On a GPU one plan instance is the default."""
    if instances is None:
        instances = 2 if target == "onnx" else 1
    if queue_delay_us is None:
        # CPU: no waiting. Each instance is one compute-bound thread, so holding requests
        # back to form a batch only serialises them on one instance while the other idles
        # (measured: c=2 65.8 img/s with 0 us vs 41.1 with 2 ms; the same at c=8); batches
        # still form from whatever queued while both instances were busy. GPU: a short
        # wait fills batches, which is where a GPU gains.
        queue_delay_us = 0 if target == "onnx" else 500
    cfg = mc.ModelConfig(name=DETECTOR, max_batch_size=max_batch)
    kind = set_runtime(cfg, target, intra_op_threads)
    cfg.input.add(name="images", data_type=mc.TYPE_FP32, dims=[3, shape.imgsz, shape.imgsz])
    cfg.output.add(name="output0", data_type=mc.TYPE_FP32, dims=[shape.num_outputs, shape.num_anchors])
    cfg.output.add(name="version", data_type=mc.TYPE_INT32, dims=[1])

    db = cfg.dynamic_batching
    sizes = [s for s in (4, 8, 16, 32) if s <= max_batch] or [max_batch]
    db.preferred_batch_size.extend(sizes)
    db.max_queue_delay_microseconds = queue_delay_us
    db.default_queue_policy.max_queue_size = max_queue_size
    db.default_queue_policy.timeout_action = mc.ModelQueuePolicy.REJECT
    db.default_queue_policy.allow_timeout_override = True
    # the line first (inference/contract.py): the gateway's boards at level 1, batch work at
    # the default level 2; Triton serves level 1 before level 2 in every batch it forms
    db.priority_levels = PRIORITY_LEVELS
    db.default_priority_level = PRIORITY_BACKGROUND

    cfg.instance_group.add(count=instances, kind=kind)
    if versions:
        cfg.version_policy.specific.versions.extend(sorted(versions))
    return cfg

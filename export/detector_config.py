"""``config.pbtxt`` of the detector, for either layout.

CPU layout: one python-backend model runs the whole side inspection (encoded ``IMAGE`` in;
detections, class names, verdict, confidence and ``version`` out) with onnxruntime
(serving/side_inspector.py): the PyPI Triton server has only the python backend, and one
step instead of three saves two inter-process hops per image (docs/benchmarks.md). GPU
layout: ``tensorrt_plan`` between the pre/post-processing models (``images`` in;
``output0`` and ``version`` out), with dynamic height and width for rect inputs. Both have
dynamic batching with preferred sizes and a bounded queue delay, and instance groups.

Neither has priority levels or a queue policy, because either one switches off Triton's
prefetching (core ``PriorityQueue``). Without prefetching, a request that queues while every
instance is busy is handed on only when the next request arrives, or after the batcher's
fixed 500 ms wait when none does: a freed instance does not wake the batcher. Measured on
the line's detector (make bench-levers, 2026-12-03): p99 0.80x at c=4 and 0.83x at c=8
without them, throughput the same (1.01-1.02x); with them a queued request was answered
after 500+ ms in about half the tries of tests/test_triton_batcher.py. A priority level would do nothing here in any case: in the
CPU layout batch work has instances of its own (serving/batch_lane.py), and in the GPU
layout the detector is a middle step, where Triton ignores a request's priority (server
issue #6055). The line's queue is bounded in the gateway instead
(``TRITON_MAX_IN_FLIGHT``: 503 ``inference_overloaded`` + Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pcb.side_config import SideConfig
from serving.repository import DETECTOR

HEADER = """# Written by `python -m export yolo`. CPU layout: one side of a board in one step (encoded
# image in; detections, verdict and the exported version number out). GPU layout: letterboxed
# images in, raw YOLO output (xywh + class scores per anchor) and the version out.
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


def side_tensors(cfg: mc.ModelConfig, side: SideConfig) -> None:
    """CPU layout: the python backend runs the whole side (serving/side_inspector.py)."""
    # images of different byte lengths share a batch: the python model gets each request's own tensor
    cfg.input.add(name="IMAGE", data_type=mc.TYPE_UINT8, dims=[-1], allow_ragged_batch=True)
    cfg.output.add(name="DETECTIONS", data_type=mc.TYPE_FP32, dims=[-1, 6])
    cfg.output.add(name="CLASS_NAMES", data_type=mc.TYPE_STRING, dims=[-1])
    cfg.output.add(name="VERDICT", data_type=mc.TYPE_INT32, dims=[1])
    cfg.output.add(name="CONFIDENCE", data_type=mc.TYPE_FP32, dims=[1])
    cfg.output.add(name="version", data_type=mc.TYPE_INT32, dims=[1])
    # the anomaly head's answer (export/anomaly_net.py); score -1 and an empty map from a
    # version exported without it
    cfg.output.add(name="ANOMALY_SCORE", data_type=mc.TYPE_FP32, dims=[1])
    cfg.output.add(name="ANOMALY_MAP", data_type=mc.TYPE_FP32, dims=[-1, -1])
    nms = side.post.nms
    for key, value in {"imgsz": side.imgsz, "letterbox": "rect" if side.rect else "square",
                       "max_pixels": side.max_pixels, "conf_threshold": nms.conf,
                       "iou_threshold": nms.iou, "max_det": nms.max_det}.items():
        cfg.parameters[key].string_value = str(value)


WARMUP_DIR = "warmup"  # Triton reads model_warmup's input_data_file from <model>/warmup/
WARMUP_BOARD = "board.jpg"
# Requests per instance before the model is READY. Measured on the CPU layout (2 instances):
# without warm-up the first two boards after a start took 68 and 55-65 ms against 26 ms
# steady (the first request through each instance's stub); with two warm-up requests per
# instance the first board took 26-28 ms. A loaded version (hot-swap) is warmed the same way
# before Triton routes to it.
WARMUP_COUNT = 2


def warmup_board(model_dir: Path) -> int:
    """A synthetic camera board (640x480 JPEG, q85) for the side model's warm-up, written once
    beside the config; returns its size in bytes (the warm-up input's length)."""
    path = model_dir / WARMUP_DIR / WARMUP_BOARD
    if not path.is_file():
        import cv2

        from pcb.synthetic import render_board

        ok, jpg = cv2.imencode(".jpg", render_board(0).image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("could not encode the warm-up board")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(jpg.tobytes())
        tmp.rename(path)
    return path.stat().st_size


def add_warmup(cfg: mc.ModelConfig, model_dir: Path | None, split: bool, imgsz: int) -> None:
    """Warm every instance through Triton's own request path before the model is READY
    (``initialize``'s own inference does not reach the stub's request path). The split
    layout's detector gets zeros at the camera's rect letterbox (the TensorRT profile's
    optimum, 320x256 for 640x480 at imgsz 320)."""
    w = cfg.model_warmup.add(name="board", batch_size=1, count=WARMUP_COUNT)
    if split:
        from export.tensorrt_target import camera_hw  # it imports this module

        w.inputs["images"].data_type = mc.TYPE_FP32
        w.inputs["images"].dims.extend([3, *camera_hw(imgsz)])
        w.inputs["images"].zero_data = True
    elif model_dir is not None:
        w.inputs["IMAGE"].data_type = mc.TYPE_UINT8
        w.inputs["IMAGE"].dims.append(warmup_board(model_dir))
        w.inputs["IMAGE"].input_data_file = WARMUP_BOARD
    else:
        del cfg.model_warmup[:]


def raw_tensors(cfg: mc.ModelConfig, shape: DetectorShape) -> None:
    """Split layout: the detector between pcb_preprocess and pcb_postprocess. Height and
    width are dynamic: rect letterboxing sends 320x256 for a 640x480 camera."""
    cfg.input.add(name="images", data_type=mc.TYPE_FP32, dims=[3, -1, -1])
    cfg.output.add(name="output0", data_type=mc.TYPE_FP32, dims=[shape.num_outputs, -1])
    cfg.output.add(name="version", data_type=mc.TYPE_INT32, dims=[1])


def detector_config(
    shape: DetectorShape,
    target: str,
    max_batch: int = 16,
    versions: list[int] | None = None,
    queue_delay_us: int | None = None,
    instances: int | None = None,
    intra_op_threads: int = 1,
    split: bool = False,
    model_dir: Path | None = None,
) -> mc.ModelConfig:
    """Instances, CPU default, measured on 2 cores (perf_analyzer, ``pcb_inspect``, concurrency 8):
    two single-threaded onnxruntime instances served 74-76 img/s against 54-67 img/s for
    one instance with two threads - while one instance computes, the other receives its
    batch. On a GPU one plan instance is the default. ``split``: raw tensors between the
    pre/post-processing models (always so for TensorRT; on a CPU, the GPU layout's stand-in).
    ``model_dir``: where the side model's warm-up board is written (``add_warmup``)."""
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
    if target == "onnx" and not split:
        side_tensors(cfg, SideConfig(imgsz=shape.imgsz))
    else:
        raw_tensors(cfg, shape)

    db = cfg.dynamic_batching
    if target == "onnx" and not split:
        # the whole side on a CPU: one image per execution. Batching buys onnxruntime ~nothing
        # here, and a batch is the unit a line board may have to wait behind: with batch
        # work queued, Triton fills the board's batch (and the one running) with up to 16
        # background images of ~15 ms each. Measured beside a 300-image job (make
        # bench-line-beside, 2 cores): board p99 250 ms with batches of 1, 460 ms with 2,
        # 950 ms with 4, and the job itself ran faster (21-29 vs 12-17 img/s)
        sizes = [1]
    else:
        sizes = [s for s in (4, 8, 16, 32) if s <= max_batch] or [max_batch]
    db.preferred_batch_size.extend(sizes)
    db.max_queue_delay_microseconds = queue_delay_us
    # no priority_levels and no default_queue_policy: either one stops Triton prefetching the
    # next request for a busy instance (module docstring)

    cfg.instance_group.add(count=instances, kind=kind)
    add_warmup(cfg, model_dir, split or target != "onnx", shape.imgsz)
    if versions:
        cfg.version_policy.specific.versions.extend(sorted(versions))
    return cfg

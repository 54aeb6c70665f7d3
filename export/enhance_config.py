"""``config.pbtxt`` of the face restorer and the background upsampler, for either layout:
CPU (python backend running the ONNX file with onnxruntime, as the detector) or GPU
(``tensorrt_plan``). Same tensors in both: ``input`` -> ``output``, FP32, dynamic batch."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from export.detector_config import set_runtime
from export.enhance_nets import NetSpec

HEADER = """# Written by `python -m export gfpgan|realesrgan`. Aligned face crops (GFPGAN) or image tiles
# (RealESRGAN) in, restored crops / upsampled tiles out; batched over every request's crops.
"""


def enhance_config(spec: NetSpec, target: str, max_batch: int = 8, versions: list[int] | None = None,
                   queue_delay_us: int | None = None, instances: int = 1, intra_op_threads: int = 0,
                   max_queue_size: int = 256) -> mc.ModelConfig:
    """One instance: a face is seconds of compute on a CPU (all cores, onnxruntime's own
    threads) and one plan saturates a GPU. A short queue delay lets crops of concurrent
    photos (several face_enhance instances) meet in one batch."""
    if queue_delay_us is None:
        queue_delay_us = 2000 if target == "onnx" else 1000
    cfg = mc.ModelConfig(name=spec.model_name, max_batch_size=max_batch)
    kind = set_runtime(cfg, target, intra_op_threads)
    if target == "onnx":
        # never on the line's path: on a CPU it shares with the line, it takes only the
        # cycles the line leaves (serving/cpu_priority.py)
        cfg.parameters["cpu_priority"].string_value = "idle"
    cfg.parameters["scale"].string_value = str(spec.scale)
    cfg.input.add(name="input", data_type=mc.TYPE_FP32, dims=list(spec.channels_hw))
    out_dims = [3, -1, -1] if spec.channels_hw[1] < 0 else list(spec.channels_hw)
    cfg.output.add(name="output", data_type=mc.TYPE_FP32, dims=out_dims)
    db = cfg.dynamic_batching
    db.preferred_batch_size.extend([s for s in (4, 8, 16) if s <= max_batch] or [max_batch])
    db.max_queue_delay_microseconds = queue_delay_us
    db.default_queue_policy.max_queue_size = max_queue_size
    db.default_queue_policy.timeout_action = mc.ModelQueuePolicy.REJECT
    cfg.instance_group.add(count=instances, kind=kind)
    if versions:
        cfg.version_policy.specific.versions.extend(sorted(versions))
    return cfg

"""YOLO .pt -> ONNX -> TensorRT plan (FP16, an optimisation profile over batch sizes) as a
new version of ``pcb_detector`` in the GPU layout (``platform: tensorrt_plan``).

The plan is built with the TensorRT Python API from the ONNX file, not with ultralytics'
engine export, whose metadata header in front of the engine Triton cannot read. A plan is
tied to the GPU model and TensorRT version it was built with: build it on (or for) the
serving GPU, inside the same TensorRT release as the Triton container.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from export.detector_config import HEADER, detector_config
from export.onnx_target import check_pipeline_size, copy_lineage, export_onnx, onnx_shape, stamp_version
from pcb.side_config import DETECTOR_STRIDE
from serving.repository import DETECTOR, next_version, read_config, served_versions, versions, write_config


@dataclass(frozen=True)
class PlanSpec:
    onnx: Path
    plan: Path
    imgsz: int
    max_batch: int
    opt_batch: int
    fp16: bool
    workspace_gib: float = 4.0
    # (min, opt, max) side of square inputs with dynamic height/width (tiles); None: imgsz
    dynamic_side: tuple[int, int, int] | None = None
    # rect letterboxed detector inputs (pcb/letterbox.py): the optimal (height, width), any
    # multiple of the stride from one stride up to imgsz x imgsz allowed
    rect_opt_hw: tuple[int, int] | None = None

    def profile_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        if self.rect_opt_hw:
            hi = self.imgsz
            return ((1, 3, RECT_MIN_SIDE, RECT_MIN_SIDE), (self.opt_batch, 3, *self.rect_opt_hw),
                    (self.max_batch, 3, hi, hi))
        lo, opt, hi = self.dynamic_side or (self.imgsz,) * 3
        return ((1, 3, lo, lo), (self.opt_batch, 3, opt, opt), (self.max_batch, 3, hi, hi))


RECT_MIN_SIDE = DETECTOR_STRIDE  # rect inputs are multiples of it


def camera_hw(imgsz: int, camera: tuple[int, int] = (480, 640)) -> tuple[int, int]:
    """The rect input a camera frame (height, width) letterboxes to: the line's one shape."""
    r = imgsz / max(camera)
    h, w = (round(camera[0] * r), round(camera[1] * r))
    return _to_stride(h), _to_stride(w)


def _to_stride(v: int) -> int:
    return -(-v // RECT_MIN_SIDE) * RECT_MIN_SIDE


def build_plan(spec: PlanSpec, dry_run: bool = False) -> list[str]:
    """Build ``spec.plan`` from ``spec.onnx``. Returns the steps taken (the dry run returns
    them without importing TensorRT, so the path is checked on machines with no GPU)."""
    lo, opt, hi = spec.profile_shapes()
    steps = [
        f"parse {spec.onnx}",
        f"profile input: min {lo} opt {opt} max {hi}",
        f"precision: {'FP16 + FP32 fallback' if spec.fp16 else 'FP32'}",
        f"workspace {spec.workspace_gib} GiB",
        f"serialize -> {spec.plan}",
    ]
    if dry_run:
        return steps
    import tensorrt as trt  # only on a GPU machine (export extra + CUDA)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {spec.onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * (1 << 30)))
    if spec.fp16:
        if not builder.platform_has_fast_fp16:
            raise RuntimeError("this GPU has no fast FP16; build without --fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the log above)")
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    spec.plan.write_bytes(bytes(serialized))
    return steps


def add_version(repository: Path, weights: Path, imgsz: int, max_batch: int, fp16: bool,
                version: int | None = None, dry_run: bool = False,
                serve_only_new: bool = False) -> tuple[int, Path, list[str]]:
    """Write ``pcb_detector/<N>/model.plan`` (and the ONNX it came from, for parity checks;
    the weights' ``lineage.json``) and the GPU-layout config."""
    check_pipeline_size(repository, imgsz)
    model_dir = repository / DETECTOR
    version = version or next_version(model_dir)
    staging = model_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    onnx_path = export_onnx(weights, imgsz, staging / "model.onnx", max_batch)
    stamp_version(onnx_path, version)
    copy_lineage(weights, staging)
    spec = PlanSpec(onnx_path, staging / "model.plan", imgsz, max_batch, min(8, max_batch), fp16,
                    rect_opt_hw=camera_hw(imgsz))
    steps = build_plan(spec, dry_run=dry_run)
    if dry_run:
        shutil.rmtree(staging)
        return version, spec.plan, steps
    served = served_versions(read_config(model_dir), versions(model_dir)) \
        if (model_dir / "config.pbtxt").exists() else []
    vdir = model_dir / str(version)
    policy = [version] if (serve_only_new or not served) else served
    cfg = detector_config(onnx_shape(staging / "model.onnx"), "tensorrt", max_batch, policy)
    staging.rename(vdir)
    write_config(model_dir, cfg, HEADER)
    # FP16 can cost a detector some accuracy: say how much, on the spot
    from export.plan_check import compare

    report = compare(vdir / "model.plan", vdir / "model.onnx", imgsz)
    steps.append(f"plan vs FP32 ONNX: {report['matched_in_plan']}/{report['fp32_boxes']} boxes matched, "
                 f"max score diff {report['max_score_diff']:.4f}")
    return version, vdir / "model.plan", steps

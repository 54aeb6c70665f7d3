"""GFPGAN / RealESRGAN -> a new version of ``face_restorer`` / ``bg_upsampler`` in the
repository: ONNX (CPU layout: python backend + onnxruntime, the same template as the
detector) or a TensorRT plan built from that ONNX (GPU layout, FP16 optional, checked
against FP32 by PSNR right after the build)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from export.enhance_config import HEADER, enhance_config
from export.enhance_nets import SPECS, build, export_onnx
from export.onnx_target import ROOT
from export.tensorrt_target import PlanSpec, build_plan
from serving.repository import next_version, read_config, served_versions, versions, write_config

# tiles: 256..512 plus up to 2x64 context; faces: fixed 512
TILE_SIDES = (64, 432, 640)


@dataclass(frozen=True)
class EnhanceExport:
    kind: str  # gfpgan | realesrgan
    repository: Path
    target: str = "onnx"  # onnx | tensorrt
    weights: Path | None = None  # None: fixed random init (tests, demo)
    narrow: bool = False
    seed: int = 0
    fp16: bool = False
    max_batch: int = 8
    version: int | None = None
    dry_run: bool = False
    serve_only_new: bool = False


def add_version(job: EnhanceExport) -> tuple[int, Path, list[str]]:
    spec = SPECS[job.kind]
    model_dir = job.repository / spec.model_name
    version = job.version or next_version(model_dir)
    staging = model_dir / f".{version}.partial"  # Triton ignores dot dirs; rename is atomic
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        net = build(job.kind, job.weights, job.narrow, job.seed)
        onnx_path = export_onnx(net, spec, staging / "model.onnx")
        source = str(job.weights) if job.weights else f"random init (seed {job.seed})"
        meta = {"network": job.kind, "narrow": job.narrow, "weights": source, "version": version}
        (staging / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        steps = [f"{job.kind}: {source}{', narrow' if job.narrow else ''} -> {onnx_path.name} (dynamic batch)"]
        if job.target == "tensorrt":
            side = (spec.sample_hw,) * 3 if spec.channels_hw[1] > 0 else TILE_SIDES
            plan = PlanSpec(onnx_path, staging / "model.plan", spec.sample_hw, job.max_batch,
                            min(8, job.max_batch), job.fp16, dynamic_side=side)
            steps += build_plan(plan, dry_run=job.dry_run)
        else:
            shutil.copy(ROOT / "serving" / "templates" / "ort_batch_model.py", staging / "model.py")
        served = (served_versions(read_config(model_dir), versions(model_dir))
                  if (model_dir / "config.pbtxt").exists() else [])
        policy = [version] if (job.serve_only_new or not served) else served
        cfg = enhance_config(spec, job.target, job.max_batch, policy)
        if job.dry_run:
            steps.append("config.pbtxt:\n" + HEADER + str(cfg))
            shutil.rmtree(staging)
            return version, model_dir / str(version), steps
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written
        raise
    vdir = model_dir / str(version)
    staging.rename(vdir)
    write_config(model_dir, cfg, HEADER)
    if job.target == "tensorrt":
        from export.psnr_check import compare

        r = compare(vdir / "model.plan", vdir / "model.onnx", job.kind)
        steps.append(f"plan vs FP32 ONNX: PSNR min {r['psnr_min_db']:.1f} dB, mean {r['psnr_mean_db']:.1f} dB"
                     + ("" if r["ok"] else f"  WARNING: {r['warning']}"))
    return version, vdir, steps

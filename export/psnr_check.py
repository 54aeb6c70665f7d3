"""FP16 plan vs its FP32 ONNX source for the enhancement networks, by PSNR on the output
images. StyleGAN2-style decoders can overflow in FP16 (GFPGAN#483: solid-colour faces) or
drift (GFPGAN#275), so the export says so right after the build instead of shipping it.

Runs on the GPU machine (TensorRT + torch CUDA for device buffers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.enhance_nets import SPECS

MIN_PSNR_DB = 30.0  # below this the FP16 plan visibly differs from FP32


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def run_plan(plan: Path, x: np.ndarray) -> np.ndarray:
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    inp = torch.from_numpy(x).cuda()
    ctx.set_input_shape("input", tuple(inp.shape))
    out = torch.empty(tuple(ctx.get_tensor_shape("output")), dtype=torch.float32, device="cuda")
    ctx.set_tensor_address("input", inp.data_ptr())
    ctx.set_tensor_address("output", out.data_ptr())
    stream = torch.cuda.Stream()
    ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()


def sample_batch(kind: str, n: int = 8, seed: int = 0) -> np.ndarray:
    """Synthetic faces (GFPGAN) or textured tiles (RealESRGAN), in each network's range."""
    from enhance.pipeline import to_tensor
    from enhance.synthetic import face_crop

    if kind == "gfpgan":
        return to_tensor(np.stack([face_crop(seed + i) for i in range(n)]))
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 432, 432), dtype=np.float32)


def compare(plan: Path, onnx: Path, kind: str, n: int = 8) -> dict:
    from serving.ort_detector import OrtDetector

    x = sample_batch(kind, n)
    ref = OrtDetector(onnx).run(x)["output"]
    got = run_plan(plan, x)
    lo, hi = (-1.0, 1.0) if SPECS[kind].kind == "gfpgan" else (0.0, 1.0)
    ref, got = np.clip(ref, lo, hi), np.clip(got, lo, hi)
    values = [psnr(r, g, hi - lo) for r, g in zip(ref, got)]
    flat = [float(g.std()) < 1e-3 for g in got]  # the solid-colour failure
    report: dict[str, Any] = {"images": n, "psnr_min_db": min(values), "psnr_mean_db": float(np.mean(values)),
              "solid_colour_outputs": int(sum(flat)), "max_abs_diff": float(np.abs(ref - got).max())}
    report["ok"] = report["psnr_min_db"] >= MIN_PSNR_DB and not any(flat)
    if not report["ok"]:
        report["warning"] = (f"FP16 differs from FP32 (min PSNR {report['psnr_min_db']:.1f} dB, "
                             f"{report['solid_colour_outputs']} solid-colour outputs): serve the FP32 plan "
                             "(export without --fp16) or keep precision-sensitive layers in FP32")
    print(f"{kind} plan vs FP32 ONNX on {n} inputs: PSNR min {report['psnr_min_db']:.1f} dB, "
          f"mean {report['psnr_mean_db']:.1f} dB, max abs diff {report['max_abs_diff']:.3g}"
          + ("" if report["ok"] else f"  WARNING: {report['warning']}"))
    return report

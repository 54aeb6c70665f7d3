"""FP16 plan vs its FP32 source: run the TensorRT plan and the ONNX file (onnxruntime, FP32)
on the same letterboxed boards and compare the final detections (after our NMS) with the
parity rule used everywhere (IoU >= 0.9, same class, score within 0.02).

Runs on the GPU machine right after the plan is built (TensorRT + torch CUDA for the
device buffers); prints and returns the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcb.letterbox import letterbox
from pcb.nms import nms
from pcb.synthetic import render_board
from serving.ort_detector import OrtDetector


def match_rate(a: np.ndarray, b: np.ndarray, min_iou: float = 0.9, tol: float = 0.02) -> tuple[int, int, float]:
    """(matched, total in a, max score diff over matches) for detections a against b."""
    matched, worst = 0, 0.0
    used: set[int] = set()
    for d in a:
        for j, e in enumerate(b):
            if j in used or int(e[5]) != int(d[5]):
                continue
            x1, y1 = max(d[0], e[0]), max(d[1], e[1])
            x2, y2 = min(d[2], e[2]), min(d[3], e[3])
            inter = max(0, x2 - x1) * max(0, y2 - y1)
            union = (d[2] - d[0]) * (d[3] - d[1]) + (e[2] - e[0]) * (e[3] - e[1]) - inter
            if union > 0 and inter / union >= min_iou and abs(d[4] - e[4]) <= tol:
                used.add(j)
                matched += 1
                worst = max(worst, abs(float(d[4] - e[4])))
                break
    return matched, len(a), worst


def run_plan(plan: Path, batch: np.ndarray) -> np.ndarray:
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    x = torch.from_numpy(batch).cuda()
    ctx.set_input_shape("images", tuple(x.shape))
    out = torch.empty(tuple(ctx.get_tensor_shape("output0")), dtype=torch.float32, device="cuda")
    ver = torch.empty(tuple(ctx.get_tensor_shape("version")), dtype=torch.int32, device="cuda")
    ctx.set_tensor_address("images", x.data_ptr())
    ctx.set_tensor_address("output0", out.data_ptr())
    ctx.set_tensor_address("version", ver.data_ptr())
    stream = torch.cuda.Stream()
    ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()


def compare(plan: Path, onnx: Path, imgsz: int, n: int = 32) -> dict:
    boards = [render_board(50_000 + i) for i in range(n)]
    batch = np.stack([letterbox(b.image, imgsz)[0] for b in boards])
    ref = OrtDetector(onnx).run(batch)["output0"]
    got = run_plan(plan, batch)
    m = t = 0
    worst = 0.0
    for r, g in zip(ref, got):
        mm, tt, w = match_rate(nms(r), nms(g))
        m, t, worst = m + mm, t + tt, max(worst, w)
    report = {"boards": n, "fp32_boxes": t, "matched_in_plan": m,
              "match_rate": (m / t) if t else 1.0, "max_score_diff": worst,
              "max_raw_abs_diff": float(np.abs(ref - got).max())}
    print(f"plan vs FP32 ONNX on {n} boards: {m}/{t} boxes matched "
          f"({report['match_rate']:.1%}), max score diff {worst:.4f}, "
          f"max raw output diff {report['max_raw_abs_diff']:.3g}")
    return report

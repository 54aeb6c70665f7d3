"""Detector output -> final detections: confidence filter, class-aware NMS, max_det.

Mirrors ultralytics' ``non_max_suppression`` (best class per box, class offset trick,
greedy IoU suppression) in numpy, so the Triton post-processing model needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_WH = 7680  # per-class coordinate offset, as in ultralytics


@dataclass(frozen=True)
class NmsConfig:
    conf: float = 0.25
    iou: float = 0.7  # ultralytics' predict default
    max_det: int = 300
    max_nms: int = 30000


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept, highest score first (torchvision.ops.nms semantics)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ious = inter / (areas[i] + areas[rest] - inter + 1e-12)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def nms(pred: np.ndarray, cfg: NmsConfig = NmsConfig()) -> np.ndarray:
    """One image's raw output (4 + nc, N): xywh + class scores -> (K, 6) float32 rows of
    x1, y1, x2, y2, score, class in letterboxed pixels, best first."""
    scores_all = pred[4:]
    cls = scores_all.argmax(0)
    score = scores_all[cls, np.arange(scores_all.shape[1])]
    sel = score > cfg.conf
    if not sel.any():
        return np.zeros((0, 6), np.float32)
    xywh, score, cls = pred[:4, sel].T, score[sel], cls[sel]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    if score.size > cfg.max_nms:
        top = np.argsort(-score, kind="stable")[: cfg.max_nms]
        boxes, score, cls = boxes[top], score[top], cls[top]
    keep = _greedy_nms(boxes + (cls * MAX_WH)[:, None], score, cfg.iou)[: cfg.max_det]
    out = np.empty((keep.size, 6), np.float32)
    out[:, :4] = boxes[keep]
    out[:, 4] = score[keep]
    out[:, 5] = cls[keep]
    return out

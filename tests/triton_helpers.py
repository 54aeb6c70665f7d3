"""Helpers for the tests of the model repository on a real Triton: inspections through the
inference contract, as plain arrays and numbers to compare with other implementations."""

from __future__ import annotations

import numpy as np

from inference import contract, results
from inference.sync import SyncTriton


def detections(side: results.SideResult) -> np.ndarray:
    """A side's detections as the model's ``[n, 6]`` rows: x1, y1, x2, y2, score, class."""
    rows = [[d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id] for d in side.detections]
    return np.array(rows, np.float32).reshape(-1, 6)


def inspect(triton: SyncTriton, data: bytes) -> dict:
    """``pcb_inspect`` on one image; ``class_names`` is the model's own CLASS_NAMES output
    (the contract names the classes from the taxonomy, so that tensor is checked here)."""
    r = triton.infer(contract.SINGLE_MODEL, triton.request(contract.inspect_request, data))
    side = results.side(r)
    return {
        "detections": detections(side),
        "class_names": [c.decode() for c in r.as_numpy("CLASS_NAMES")[0]],
        "verdict": side.verdict_code,
        "confidence": side.confidence,
        "version": side.detector_version,
    }


def dual_inspect(triton: SyncTriton, left: bytes, right: bytes) -> dict:
    r = triton.infer(contract.DUAL_MODEL, triton.request(contract.dual_request, left, right))
    dual = results.dual(r, 0.0)
    return {"left_detections": detections(dual.left), "right_detections": detections(dual.right),
            "left_verdict": dual.left.verdict_code, "right_verdict": dual.right.verdict_code,
            "board_verdict": dual.board_verdict_code, "gpio_pin": dual.gpio_pin,
            "gpio_duration_ms": dual.gpio_duration_ms, "left_confidence": dual.left.confidence,
            "right_confidence": dual.right.confidence, "board_confidence": dual.board_confidence}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(a: np.ndarray, b: np.ndarray, min_iou: float = 0.9, score_tol: float = 0.02,
                     conf: float = 0.25) -> list[str]:
    """Every detection of ``a`` must have one in ``b`` (same class, IoU >= min_iou, score
    within score_tol) and vice versa. A detection whose score lies within score_tol of the
    confidence threshold may be missing on the other side: it is allowed to fall either way.
    Returns the list of problems (empty when they agree)."""
    problems = []
    for src, dst, label in ((a, b, "a->b"), (b, a, "b->a")):
        used: set[int] = set()
        for d in src:
            best, best_j = 0.0, -1
            for j, e in enumerate(dst):
                if j in used or int(e[5]) != int(d[5]):
                    continue
                v = iou(d, e)
                if v > best:
                    best, best_j = v, j
            if best >= min_iou and abs(dst[best_j][4] - d[4]) <= score_tol:
                used.add(best_j)
            elif d[4] > conf + score_tol:
                problems.append(f"{label}: unmatched {np.round(d, 3).tolist()} (best IoU {best:.3f})")
    return problems


def stub_pids(server) -> dict[str, list[int]]:
    """Model name -> pids of its python-backend stub processes under this Triton."""
    import psutil

    out: dict[str, list[int]] = {}
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        cmd = p.cmdline()
        if cmd and cmd[0].endswith("triton_python_backend_stub"):
            out.setdefault(cmd[1].split("/")[-3], []).append(p.pid)
    return out

"""Small client helpers for tests and benchmarks talking to the real Triton server."""

from __future__ import annotations

import numpy as np
import tritonclient.http as http


def image_input(name: str, data: bytes) -> http.InferInput:
    arr = np.frombuffer(data, np.uint8)[None]
    inp = http.InferInput(name, list(arr.shape), "UINT8")
    inp.set_data_from_numpy(arr)
    return inp


def inspect(client: http.InferenceServerClient, data: bytes) -> dict:
    r = client.infer("pcb_inspect", [image_input("IMAGE", data)])
    return {
        "detections": r.as_numpy("DETECTIONS")[0],
        "class_names": [c.decode() for c in r.as_numpy("CLASS_NAMES")[0]],
        "verdict": int(r.as_numpy("VERDICT")[0, 0]),
        "confidence": float(r.as_numpy("CONFIDENCE")[0, 0]),
        "version": int(r.as_numpy("DETECTOR_VERSION")[0, 0]),
    }


def dual_inspect(client: http.InferenceServerClient, left: bytes, right: bytes) -> dict:
    r = client.infer("pcb_dual_inspect", [image_input("LEFT_IMAGE", left), image_input("RIGHT_IMAGE", right)])
    out = {k.lower(): r.as_numpy(k)[0] for k in ("LEFT_DETECTIONS", "RIGHT_DETECTIONS")}
    for k in ("LEFT_VERDICT", "RIGHT_VERDICT", "BOARD_VERDICT", "GPIO_PIN", "GPIO_DURATION_MS"):
        out[k.lower()] = int(r.as_numpy(k)[0, 0])
    for k in ("LEFT_CONFIDENCE", "RIGHT_CONFIDENCE", "BOARD_CONFIDENCE"):
        out[k.lower()] = float(r.as_numpy(k)[0, 0])
    return out


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

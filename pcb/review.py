"""The anomaly policy: when an anomaly the detector does not explain sends a side to review.

The anomaly model (pcb_anomaly) gives a coarse map over the whole image, in units of its
calibrated threshold (1.0 = the threshold). A side the detector already calls defective
keeps that verdict: a named defect is more useful to the sorter than "something is odd".
A side the detector passes is sent to the taxonomy's anomaly verdict (``review``) when the
map reaches 1.0 **outside every detected box**: a box's own cells are explained (a minor
defect such as a mouse bite is anomalous too, and was judged already), the rest is not.
With no detection this is the plain rule "anomaly above threshold -> review".
"""

from __future__ import annotations

import numpy as np

from pcb import taxonomy
from pcb.verdict import SideVerdict

MARGIN_CELLS = 1  # a box's neighbourhood is explained too: features are 3x3-pooled
MAP_STRIDE = 8  # letterboxed pixels per map cell (export/anomaly_net.py)


def crop_map(amap: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The cells of ``amap`` (over the letterboxed input) that lie on the image, not on the
    padding: whole cells, at least one. ``transform`` is pcb/letterbox.py's (gain x/y, pad
    x/y, original width/height)."""
    gx, gy, px, py, w, h = (float(v) for v in transform)
    r1, c1 = int(py) // MAP_STRIDE, int(px) // MAP_STRIDE
    r2 = max(-(-int(round(py + h * gy)) // MAP_STRIDE), r1 + 1)
    c2 = max(-(-int(round(px + w * gx)) // MAP_STRIDE), c1 + 1)
    return amap[r1:r2, c1:c2]


def unexplained(amap: np.ndarray, boxes: np.ndarray, width: float, height: float) -> float:
    """The map's maximum outside the detected boxes (xyxy, image pixels); 0 when every
    cell is covered. The map spans the image: cell (r, c) covers rows r*H/mh..(r+1)*H/mh."""
    mh, mw = amap.shape
    if mh == 0 or mw == 0:
        return 0.0
    free = np.ones((mh, mw), bool)
    sx, sy = mw / max(width, 1.0), mh / max(height, 1.0)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        c1 = max(int(np.floor(x1 * sx)) - MARGIN_CELLS, 0)
        r1 = max(int(np.floor(y1 * sy)) - MARGIN_CELLS, 0)
        c2 = min(int(np.ceil(x2 * sx)) + MARGIN_CELLS, mw)
        r2 = min(int(np.ceil(y2 * sy)) + MARGIN_CELLS, mh)
        free[r1:r2, c1:c2] = False
    rest = amap[free]
    return float(rest.max()) if rest.size else 0.0


def review(side: SideVerdict, amap: np.ndarray, boxes: np.ndarray, width: float, height: float,
           tax: taxonomy.Taxonomy | None = None) -> SideVerdict:
    """The side's verdict with the anomaly map taken into account. Confidence of a review
    verdict: score / 2, capped at 1 (0.5 at the threshold, 1.0 at twice it); a map with a
    NaN or infinity reviews too."""
    tax = tax or taxonomy.load()
    if side.code != tax.ok.code:
        return side
    score = unexplained(amap, boxes, width, height)
    if np.isfinite(score) and score < 1.0:
        return side
    # a map that is not a number is the model's fault: a person looks (fail safe)
    return SideVerdict(tax.anomaly.code, float(min(score / 2.0, 1.0)) if np.isfinite(score) else 1.0)

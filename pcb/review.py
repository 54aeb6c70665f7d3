"""The anomaly policy: when an anomaly the detector does not explain sends a side to review.

The detector's anomaly head (export/anomaly_net.py) gives a coarse map over the letterboxed
input, in units of its calibrated threshold (1.0 = the threshold). A side the detector
already calls defective keeps that verdict: a named defect is more useful to the sorter than
"something is odd". A side the detector passes is sent to the taxonomy's anomaly verdict
(``review``) when the map reaches 1.0 **outside every detected box**: a box's own cells and
their neighbours are explained (a minor defect such as a mouse bite is anomalous too, and
was judged already), the rest is not. With no detection this is the plain rule "anomaly
above threshold -> review".
"""

from __future__ import annotations

import numpy as np

from pcb import taxonomy
from pcb.verdict import SideVerdict

# cells around a box that it explains: a defect's features reach ~2 cells beyond it (3x3
# pooled features, the stride-16 layer upsampled, the map 3x3-smoothed). Measured on 30
# rendered boards per minor class left `normal`: margin 1 sent 2/30 mouse bites and 10/30
# pin holes to review, margin 2 0/30 and 5/30
MARGIN_CELLS = 2
MAP_STRIDE = 8  # letterboxed pixels per map cell (export/anomaly_net.py)


def _image_cells(transform: np.ndarray) -> tuple[int, int, int, int]:
    """(r1, c1, r2, c2): the map cells on the image, not on the padding (whole cells, at
    least one). ``transform`` is pcb/letterbox.py's (gain x/y, pad x/y, original w/h)."""
    gx, gy, px, py, w, h = (float(v) for v in transform)
    r1, c1 = int(py) // MAP_STRIDE, int(px) // MAP_STRIDE
    r2 = max(-(-int(round(py + h * gy)) // MAP_STRIDE), r1 + 1)
    c2 = max(-(-int(round(px + w * gx)) // MAP_STRIDE), c1 + 1)
    return r1, c1, r2, c2


def crop_map(amap: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The cells of ``amap`` (over the letterboxed input) that lie on the image."""
    r1, c1, r2, c2 = _image_cells(transform)
    return amap[r1:r2, c1:c2]


def unexplained(cropped: np.ndarray, boxes: np.ndarray, transform: np.ndarray) -> float:
    """The cropped map's maximum outside the detected boxes (xyxy, image pixels, mapped to
    cells exactly as the letterbox placed them, plus MARGIN_CELLS); 0 when all is covered."""
    mh, mw = cropped.shape
    if mh == 0 or mw == 0:
        return 0.0
    gx, gy, px, py = (float(v) for v in transform[:4])
    r0, c0, _, _ = _image_cells(transform)
    free = np.ones((mh, mw), bool)
    for x1, y1, x2, y2 in np.nan_to_num(np.asarray(boxes, np.float64).reshape(-1, 4), nan=0.0):
        c1 = int(np.floor((x1 * gx + px) / MAP_STRIDE)) - c0 - MARGIN_CELLS
        r1 = int(np.floor((y1 * gy + py) / MAP_STRIDE)) - r0 - MARGIN_CELLS
        c2 = int(np.ceil((x2 * gx + px) / MAP_STRIDE)) - c0 + MARGIN_CELLS
        r2 = int(np.ceil((y2 * gy + py) / MAP_STRIDE)) - r0 + MARGIN_CELLS
        free[max(r1, 0):max(r2, 0), max(c1, 0):max(c2, 0)] = False
    rest = cropped[free]
    return float(rest.max()) if rest.size else 0.0


def review(side: SideVerdict, cropped: np.ndarray, boxes: np.ndarray, transform: np.ndarray,
           tax: taxonomy.Taxonomy | None = None) -> SideVerdict:
    """The side's verdict with the anomaly map taken into account. Confidence of a review
    verdict: score / 2, capped at 1 (0.5 at the threshold, 1.0 at twice it); a map with a
    NaN or infinity reviews too (fail safe)."""
    tax = tax or taxonomy.load()
    if side.code != tax.ok.code:
        return side
    score = unexplained(cropped, boxes, transform)
    if np.isfinite(score) and score < 1.0:
        return side
    return SideVerdict(tax.anomaly.code, float(min(score / 2.0, 1.0)) if np.isfinite(score) else 1.0)

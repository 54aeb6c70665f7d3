"""Letterbox to the detector's square input, and the transform back to image pixels.

Mirrors ultralytics' ``LetterBox(auto=False, center=True)`` and ``scale_boxes`` exactly
(rounding included) so the exported pipeline gives the boxes ultralytics gives.
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114
# transform vector layout, as carried between Triton models: see ``to_image``.
TRANSFORM_LEN = 6  # gain_x, gain_y, pad_x, pad_y, orig_w, orig_h


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """BGR HxWx3 uint8 -> (3 x size x size float32 RGB in [0,1], transform[6])."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    # BGR->RGB, HWC->CHW, /255 in one pass over the small image
    chw = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1), dtype=np.float32)
    chw *= 1.0 / 255.0
    transform = np.array([new_w / w, new_h / h, left, top, w, h], np.float32)
    return chw, transform


def to_image(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """xyxy boxes in letterboxed pixels -> original-image pixels, clipped (in place)."""
    gx, gy, px, py, w, h = (float(v) for v in transform)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - px) / gx).clip(0, w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - py) / gy).clip(0, h)
    return boxes

"""Letterbox to the detector's input, and the transform back to image pixels.

Mirrors ultralytics' ``LetterBox(center=True)`` and ``scale_boxes`` exactly (rounding
included) so the exported pipeline gives the boxes ultralytics gives. Two forms:

- square (``stride=0``): pad to ``size x size``, ultralytics' ``auto=False``;
- rect (``stride=32``): pad the short side only up to a multiple of the detector's largest
  stride, ultralytics' ``auto=True`` (its default ``predict`` on a .pt model). A 640x480
  camera frame becomes 320x256 instead of 320x320: 20 % fewer pixels through the detector.
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114
# transform vector layout, as carried between Triton models: see ``to_image``.
TRANSFORM_LEN = 6  # gain_x, gain_y, pad_x, pad_y, orig_w, orig_h


def letterbox(img: np.ndarray, size: int, stride: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BGR HxWx3 uint8 -> (3 x H x W float32 RGB in [0,1], transform[6]); H = W = size
    unless ``stride`` asks for the rect form."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = size - new_w, size - new_h
    if stride:
        dw, dh = dw % stride, dh % stride
    half_w, half_h = dw / 2, dh / 2
    top, bottom = round(half_h - 0.1), round(half_h + 0.1)
    left, right = round(half_w - 0.1), round(half_w + 0.1)
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

"""Letterbox to the detector's input, and the transform back to image pixels.

Mirrors ultralytics' ``LetterBox(center=True)`` and ``scale_boxes`` exactly (rounding
included) so the exported pipeline gives the boxes ultralytics gives. Two forms:

- square (``stride=0``): pad to ``size x size``, ultralytics' ``auto=False``;
- rect (``stride=32``): pad the short side only up to a multiple of the detector's largest
  stride, ultralytics' ``auto=True`` (its default ``predict`` on a .pt model). A 640x480
  camera frame becomes 320x256 instead of 320x320: 20 % fewer pixels through the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
# transform vector layout, as carried between Triton models: see ``to_image``.
TRANSFORM_LEN = 6  # gain_x, gain_y, pad_x, pad_y, orig_w, orig_h


@dataclass(frozen=True)
class Geometry:
    """Where a ``w x h`` image lands in the letterboxed input: resized to ``new_w x new_h``,
    then padded by ``top, bottom, left, right``. One rule for the OpenCV path (``letterbox``)
    and the GPU path (serving/gpu_preprocess.py)."""
    w: int
    h: int
    new_w: int
    new_h: int
    top: int
    bottom: int
    left: int
    right: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.new_h + self.top + self.bottom, self.new_w + self.left + self.right

    def transform(self) -> np.ndarray:
        return np.array([self.new_w / self.w, self.new_h / self.h, self.left, self.top, self.w, self.h], np.float32)


def geometry(w: int, h: int, size: int, stride: int = 0) -> Geometry:
    """ultralytics' LetterBox(center=True) arithmetic, rounding included."""
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    pad_w, pad_h = size - new_w, size - new_h
    if stride:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    dw, dh = pad_w / 2, pad_h / 2
    return Geometry(w, h, new_w, new_h, top=round(dh - 0.1), bottom=round(dh + 0.1),
                    left=round(dw - 0.1), right=round(dw + 0.1))


def letterbox(img: np.ndarray, size: int, stride: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BGR HxWx3 uint8 -> (3 x H x W float32 RGB in [0,1], transform[6]); H = W = size
    unless ``stride`` asks for the rect form."""
    h, w = img.shape[:2]
    g = geometry(w, h, size, stride)
    if (w, h) != (g.new_w, g.new_h):
        img = cv2.resize(img, (g.new_w, g.new_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, g.top, g.bottom, g.left, g.right, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    # BGR->RGB, HWC->CHW, /255 in one pass over the small image
    chw = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1), dtype=np.float32)
    chw *= 1.0 / 255.0
    return chw, g.transform()


def to_image(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """xyxy boxes in letterboxed pixels -> original-image pixels, clipped (in place)."""
    gx, gy, px, py, w, h = (float(v) for v in transform)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - px) / gx).clip(0, w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - py) / gy).clip(0, h)
    return boxes

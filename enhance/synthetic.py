"""Synthetic face photos with known landmarks, for tests and benchmarks (no face photos can be
downloaded here). Drawn the way a frontal face looks to OpenCV's Haar cascade: a lit oval, dark
eyes with brows above, a nose shadow and a mouth, hair above, on a textured background."""

from __future__ import annotations

import cv2
import numpy as np


def draw_face(img: np.ndarray, cx: float, cy: float, size: float, rng: np.random.Generator) -> np.ndarray:
    """Draw one face centred at (cx, cy), ``size`` = face width in px. Returns its 5 landmarks
    (left eye, right eye, nose, left mouth, right mouth)."""
    s = size / 2
    skin = tuple(int(v) for v in rng.integers([120, 150, 190], [160, 190, 235]))
    hair = tuple(int(v) for v in rng.integers(10, 70, 3))
    c = (int(cx), int(cy))
    cv2.ellipse(img, (c[0], int(cy - 0.35 * s)), (int(1.05 * s), int(0.9 * s)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    cv2.ellipse(img, c, (int(s), int(1.3 * s)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    shade = tuple(max(0, v - 45) for v in skin)
    eyes = np.array([[cx - 0.4 * s, cy - 0.25 * s], [cx + 0.4 * s, cy - 0.25 * s]], np.float32)
    for ex, ey in eyes:
        cv2.ellipse(img, (int(ex), int(ey - 0.28 * s)), (int(0.28 * s), int(0.07 * s)), 0, 180, 360, hair, -1, cv2.LINE_AA)
        cv2.ellipse(img, (int(ex), int(ey)), (int(0.2 * s), int(0.1 * s)), 0, 0, 360, (235, 235, 235), -1, cv2.LINE_AA)
        cv2.circle(img, (int(ex), int(ey)), int(0.09 * s), (40, 30, 25), -1, cv2.LINE_AA)
    nose = np.array([cx, cy + 0.2 * s], np.float32)
    cv2.ellipse(img, (int(cx), int(cy + 0.15 * s)), (int(0.1 * s), int(0.28 * s)), 0, 0, 360, shade, -1, cv2.LINE_AA)
    mouth = np.array([[cx - 0.32 * s, cy + 0.62 * s], [cx + 0.32 * s, cy + 0.62 * s]], np.float32)
    cv2.ellipse(img, (int(cx), int(cy + 0.62 * s)), (int(0.32 * s), int(0.1 * s)), 0, 0, 180, (70, 60, 150), -1, cv2.LINE_AA)
    return np.vstack([eyes, nose[None], mouth]).astype(np.float32)


def face_photo(seed: int, size: tuple[int, int] = (640, 480), faces: int = 1,
               face_width: tuple[int, int] = (110, 170)) -> tuple[np.ndarray, list[np.ndarray]]:
    """A BGR photo with ``faces`` non-overlapping faces; returns (image, landmarks per face)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(60, 200, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = (base[None, None] * (0.7 + 0.3 * (xx / w))[..., None]).astype(np.float32)
    img += rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    marks = []
    slot = w / max(1, faces)
    for i in range(faces):
        fw = float(rng.integers(*face_width))
        fw = min(fw, slot * 0.7)
        cx = slot * (i + 0.5) + rng.uniform(-0.05, 0.05) * slot
        cy = h * 0.5 + rng.uniform(-0.05, 0.05) * h
        marks.append(draw_face(img, cx, cy, fw, rng))
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, marks


def face_crop(seed: int, size: int = 512) -> np.ndarray:
    """An aligned-looking 512 px face crop (BGR uint8), for network checks."""
    from enhance.align import align_matrix, warp_face

    img, marks = face_photo(seed, (512, 512), 1, (220, 260))
    return warp_face(img, align_matrix(marks[0], size), size)

"""Face detection with 5 landmarks: a real detector file when one is supplied (YuNet ONNX via
``cv2.FaceDetectorYN``), OpenCV's bundled Haar cascades as the weight-free fallback.

Haar gives boxes only. Landmarks come from the eye cascade inside the box when it finds two
eyes, else from the box geometry (where eyes, nose and mouth sit in a frontal Haar box);
mouth and nose follow from the eyes. Good enough for alignment of frontal faces; a YuNet file
(``face_detection_yunet_2023mar.onnx`` from opencv_zoo) is better and handles rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DETECT_MAX_SIDE = 640  # detect on a downscaled copy: faces worth restoring survive that


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth (image sides)
    score: float

    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


# fractions of a frontal Haar face box (measured on the cascade's typical boxes)
_BOX_POINTS = np.array([[0.31, 0.39], [0.69, 0.39], [0.50, 0.58], [0.35, 0.77], [0.65, 0.77]], np.float32)


def landmarks_from_box(x: float, y: float, w: float, h: float) -> np.ndarray:
    return _BOX_POINTS * np.array([w, h], np.float32) + np.array([x, y], np.float32)


def landmarks_from_eyes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Nose and mouth from the eye line: the template's proportions, rotated with the eyes."""
    d = right - left
    n = np.array([-d[1], d[0]], np.float32)  # perpendicular, pointing down the face
    c = (left + right) / 2
    return np.stack([left, right, c + 0.59 * n, c - 0.44 * d + 1.04 * n, c + 0.44 * d + 1.04 * n]).astype(np.float32)


def _downscale(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    s = min(1.0, max_side / max(img.shape[:2]))
    if s < 1.0:  # never to zero pixels: a long strip keeps at least one row
        size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, s


class HaarFaceDetector:
    def __init__(self, min_size: int = 24):
        root = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]  # cv2's stubs omit cv2.data
        self.faces = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
        self.eyes = cv2.CascadeClassifier(str(root / "haarcascade_eye.xml"))
        self.min_size = min_size
        if self.faces.empty() or self.eyes.empty():
            raise RuntimeError(f"OpenCV's Haar cascades are missing under {root}")

    def detect(self, img: np.ndarray) -> list[Face]:
        small, s = _downscale(img, DETECT_MAX_SIDE)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        found, _, weights = self.faces.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5,
                                                         minSize=(self.min_size, self.min_size),
                                                         outputRejectLevels=True)
        out = []
        for (x, y, w, h), score in zip(found, np.ravel(weights) if len(found) else []):
            pts = self._eyes(grey, x, y, w, h)
            if pts is None:
                pts = landmarks_from_box(x, y, w, h)
            out.append(Face(box=(x / s, y / s, (x + w) / s, (y + h) / s), landmarks=pts / s, score=float(score)))
        return sorted(out, key=lambda f: -(f.box[2] - f.box[0]))

    def _eyes(self, grey: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        roi = grey[y:y + h * 6 // 10, x:x + w]
        eyes = self.eyes.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=6, minSize=(max(4, w // 10),) * 2)
        if len(eyes) < 2:
            return None
        centres = sorted(((ex + ew / 2 + x, ey + eh / 2 + y) for ex, ey, ew, eh in eyes),
                         key=lambda c: c[0])
        left, right = np.array(centres[0], np.float32), np.array(centres[-1], np.float32)
        # the eye cascade also fires on brows and nostrils: keep only a plausible pair
        if not (0.25 * w < right[0] - left[0] < 0.65 * w and abs(right[1] - left[1]) < 0.2 * h
                and y + 0.2 * h < (left[1] + right[1]) / 2 < y + 0.55 * h):
            return None
        return landmarks_from_eyes(left, right)


class YuNetFaceDetector:
    """``cv2.FaceDetectorYN`` over a YuNet ONNX file (rows: box, 5 landmarks, score)."""

    def __init__(self, model: str | Path, score_threshold: float = 0.7):
        self.net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, 0.3, 5000)

    def detect(self, img: np.ndarray) -> list[Face]:
        small, s = _downscale(img, DETECT_MAX_SIDE)
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, rows = self.net.detect(small)
        out = []
        for r in rows if rows is not None else []:
            x, y, w, h = r[:4] / s
            out.append(Face(box=(x, y, x + w, y + h), landmarks=r[4:14].reshape(5, 2).astype(np.float32) / s,
                            score=float(r[14])))
        return sorted(out, key=lambda f: -(f.box[2] - f.box[0]))


def make_detector(model: str | Path | None = None):
    """YuNet when a model file is given and exists, Haar otherwise."""
    if model and Path(model).is_file():
        return YuNetFaceDetector(model)
    return HaarFaceDetector()

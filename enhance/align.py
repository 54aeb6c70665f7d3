"""5-point alignment to the FFHQ 512 template and the way back (inverse affine + soft mask).

The template and the mask recipe are the ones GFPGAN's face helper uses (facexlib), so crops
look like what the restorer was trained on: similarity transform (rotation, uniform scale,
translation) fitted robustly (LMEDS), grey border, and on the way back a mask eroded and
blurred in proportion to the face size so the seam does not show.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512
# left eye, right eye, nose tip, left and right mouth corner (as seen in the image), 512 px
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.19360], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)
BORDER_VALUE = (135, 133, 132)  # facexlib's grey fill outside the image


def template(size: int = FACE_SIZE) -> np.ndarray:
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def align_matrix(landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """2x3 similarity transform from image landmarks (5, 2) to the template."""
    m, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), template(size), method=cv2.LMEDS)
    if m is None:  # degenerate points (all equal): a plain least-squares fit
        m = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), template(size))[0]
    if m is None:
        raise ValueError("cannot fit an alignment to these landmarks")
    return m.astype(np.float64)


def warp_face(img: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    return cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_VALUE)


def inverse_matrix(matrix: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """Template -> output image (the input scaled by ``upscale``). The half-pixel shift keeps
    pixel centres aligned when the output is larger than the input."""
    inv = cv2.invertAffineTransform(matrix) * upscale
    if upscale > 1:
        inv[:, 2] += 0.5 * (upscale - 1)
    return inv


def paste_face(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """Blend one restored (template-space) face into ``canvas`` (already at output size).
    Returns the canvas (float32 work, uint8 out)."""
    h, w = canvas.shape[:2]
    inv = inverse_matrix(matrix, upscale)
    size = face.shape[0]
    back = cv2.warpAffine(face, inv, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((size, size), np.float32), inv, (w, h), flags=cv2.INTER_LINEAR)
    k = max(1, int(round(2 * upscale)))
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))  # drop the interpolated rim
    area = float(mask.sum())
    edge = int(area ** 0.5) // 20  # feather width ~ 5 % of the face side
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
    m = mask[:, :, None]
    out = m * back.astype(np.float32) + (1.0 - m) * canvas.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

"""One photo through the enhancement pipeline, in two halves so a server can restore the
faces of many photos in one batch between them:

  prepare(image, options, detector) -> Prepared (aligned 512 px face crops, as a tensor)
  restore(crops) -> restored crops          (GFPGAN: ONNX in-process, or Triton over BLS)
  finish(prepared, restored, upsample)      -> the output image, face count, flags

A photo with no face is a defined result: only the background path runs (resize or the
upsampler) and ``no_face`` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from enhance.align import FACE_SIZE, align_matrix, paste_face, warp_face
from enhance.options import EnhanceOptions
from enhance.tiles import UpsampleFn, upsample_tiled

MIN_EYE_DISTANCE = 5.0  # px, as GFPGAN: smaller "faces" are mostly false detections
RestoreFn = Callable[[np.ndarray], np.ndarray]  # (N, 3, 512, 512) RGB [-1, 1] -> same


@dataclass
class Prepared:
    image: np.ndarray  # BGR uint8 input
    options: EnhanceOptions
    crops: np.ndarray  # (N, 512, 512, 3) BGR uint8 aligned faces
    matrices: list[np.ndarray]
    boxes: list[tuple[float, float, float, float]]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    image: np.ndarray
    faces: int
    no_face: bool
    background_upsampled: bool
    boxes: list[tuple[float, float, float, float]]
    timings: dict[str, float]

    def info(self) -> dict:
        return {"faces": self.faces, "no_face": self.no_face, "background_upsampled": self.background_upsampled,
                "boxes": [[round(v, 1) for v in b] for b in self.boxes],
                "width": int(self.image.shape[1]), "height": int(self.image.shape[0]),
                "timings_ms": {k: round(v * 1000, 1) for k, v in self.timings.items()}}


def to_tensor(crops: np.ndarray) -> np.ndarray:
    """BGR uint8 (N, H, W, 3) -> RGB float32 (N, 3, H, W) in [-1, 1] (GFPGAN's input)."""
    x = crops[..., ::-1].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_tensor(x: np.ndarray) -> np.ndarray:
    """RGB float (N, 3, H, W) in [-1, 1] -> BGR uint8 (N, H, W, 3), clamped like tensor2img."""
    y = (np.clip(x, -1.0, 1.0) + 1.0) * 127.5
    return np.ascontiguousarray(np.round(y).astype(np.uint8).transpose(0, 2, 3, 1)[..., ::-1])


def prepare(image: np.ndarray, options: EnhanceOptions, detector) -> Prepared:
    t0 = time.perf_counter()
    faces = [f for f in detector.detect(image) if f.eye_distance() >= MIN_EYE_DISTANCE][:options.max_faces]
    t1 = time.perf_counter()
    matrices = [align_matrix(f.landmarks) for f in faces]
    crops = (np.stack([warp_face(image, m) for m in matrices]) if matrices
             else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8))
    return Prepared(image, options, crops, matrices, [f.box for f in faces],
                    {"detect": t1 - t0, "align": time.perf_counter() - t1})


def background(image: np.ndarray, options: EnhanceOptions, upsample: UpsampleFn | None,
               upsample_scale: int = 2) -> tuple[np.ndarray, bool]:
    """The input at output size: the upsampler (tiled) when asked for and available, a
    Lanczos resize otherwise (and to reach an upscale the network does not have)."""
    h, w = image.shape[:2]
    s = options.upscale
    if s == 1:
        return image.copy(), False
    used = False
    out = image
    if options.background and upsample is not None:
        out = upsample_tiled(image, upsample, upsample_scale, options.tile, options.tile_pad)
        used = True
    if out.shape[:2] != (h * s, w * s):
        out = cv2.resize(out, (w * s, h * s), interpolation=cv2.INTER_LANCZOS4)
    return out, used


def finish(p: Prepared, restored: np.ndarray, upsample: UpsampleFn | None = None,
           upsample_scale: int = 2) -> Result:
    """``restored``: (N, 3, 512, 512) network output for ``p.crops``."""
    t0 = time.perf_counter()
    canvas, used = background(p.image, p.options, upsample, upsample_scale)
    t1 = time.perf_counter()
    if len(p.matrices):
        faces = from_tensor(restored)
        if p.options.weight < 1.0:  # blend towards the aligned original
            w = p.options.weight
            faces = cv2.addWeighted(faces.reshape(-1, FACE_SIZE, 3), w,
                                    p.crops.reshape(-1, FACE_SIZE, 3), 1 - w, 0).reshape(faces.shape)
        for face, m in zip(faces, p.matrices):
            canvas = paste_face(canvas, face, m, p.options.upscale)
    timings = {**p.timings, "background": t1 - t0, "paste": time.perf_counter() - t1}
    return Result(canvas, len(p.matrices), not p.matrices, used, p.boxes, timings)


def enhance(image: np.ndarray, options: EnhanceOptions, detector, restore: RestoreFn,
            upsample: UpsampleFn | None = None, max_batch: int = 8) -> Result:
    """The whole pipeline in one process (benchmarks, tests)."""
    p = prepare(image, options, detector)
    t0 = time.perf_counter()
    x = to_tensor(p.crops)
    restored = (np.concatenate([restore(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
                if len(x) else np.zeros((0, 3, FACE_SIZE, FACE_SIZE), np.float32))
    p.timings["restore"] = time.perf_counter() - t0
    return finish(p, restored, upsample)


def encode_like(img: np.ndarray, source: bytes, jpeg_quality: int = 95) -> tuple[bytes, str]:
    """Encode the result in the input's format: PNG stays PNG (lossless), else JPEG."""
    if source[:8] == b"\x89PNG\r\n\x1a\n":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        ext = "png"
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        ext = "jpg"
    if not ok:
        raise RuntimeError("could not encode the result")
    return buf.tobytes(), ext

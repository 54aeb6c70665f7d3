"""Encoded image bytes -> BGR array, with the checks a public endpoint needs.

Dimensions are read from the JPEG/PNG header *before* decoding so an image bomb (a tiny file
that decodes to gigapixels) is refused without allocating it, and so is a degenerate strip
(longest side over ``MAX_ASPECT_RATIO`` times the shortest): a 65500x40 photo or a 100000x1
frame is no camera's picture, and resized to a detector's or face finder's input it loses
its short side altogether. Every refusal is an ``ImageError`` with a stable ``code`` that the
gateway and the Triton models pass on as is. ``check_header`` is the one rule: the gateway's
uploads, the batch engine's items and the Triton models all call it.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

MAX_PIXELS = 40_000_000  # 40 MP: far above any line camera, far below a bomb
# longest side / shortest side: line cameras are 4:3, photos 16:9, phone panoramas up to ~8:1;
# at 20:1 the 320 px detector input keeps a 16 px short side and the 640 px face-detection
# copy 32 px, beyond that the pictures are strips that only break the pipelines
MAX_ASPECT_RATIO = 20.0


class ImageError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _png_size(b: bytes) -> tuple[int, int] | None:
    if len(b) >= 24 and b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return w, h
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    if len(b) < 4 or b[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            i += 1
            continue
        marker = b[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", b[i + 2 : i + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return w, h
        i += 2 + seg_len
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, or None if neither."""
    return _png_size(data) or _jpeg_size(data)


def check_header(head: bytes, max_pixels: int = MAX_PIXELS,
                 max_aspect: float = MAX_ASPECT_RATIO) -> tuple[int, int]:
    """The checks that need only the first bytes (up to 64 KiB) of the file: non-empty,
    JPEG or PNG, sane dimensions under ``max_pixels``, longest side at most ``max_aspect``
    times the shortest (``image_aspect_ratio``). Returns (width, height). Used before any
    decoding, here, by the gateway on uploads and by the batch workers on every item."""
    if not head:
        raise ImageError("empty_image", "the image is empty")
    size = image_size(head)
    if size is None:
        if head[:2] == b"\xff\xd8" or head[:8] == b"\x89PNG\r\n\x1a\n":
            raise ImageError("invalid_image", "the image header is corrupt or truncated")
        raise ImageError("unsupported_image", "not a JPEG or PNG image")
    w, h = size
    if w == 0 or h == 0:
        raise ImageError("invalid_image", f"image header says {w}x{h}")
    if w * h > max_pixels:
        raise ImageError("image_too_large", f"{w}x{h} pixels is over the limit of {max_pixels}")
    if max(w, h) > max_aspect * min(w, h):
        raise ImageError("image_aspect_ratio", f"{w}x{h} is a strip: the longest side may be at most "
                                               f"{max_aspect:g} times the shortest")
    return w, h


def decode_image(data: bytes | np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG bytes to an HxWx3 BGR uint8 array (grey and alpha are dropped the way
    ``cv2.imread`` does, which is what ultralytics does with files)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    raw = buf[:65536].tobytes()
    check_header(raw, max_pixels)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:  # a codec assertion on a malformed stream is this image's fault only
        img = None
    if img is None:
        raise ImageError("invalid_image", "the image could not be decoded (corrupt or truncated)")
    if truncated_jpeg(buf):
        raise ImageError("invalid_image", "the JPEG is truncated (no end-of-image marker)")
    return img


def truncated_jpeg(buf: np.ndarray) -> bool:
    """A JPEG without its end-of-image marker (the GPU path routes these to ``decode_image``
    by the same rule)."""
    # libjpeg fills a truncated scan with grey and only warns; a half-grey board would be
    # inspected as if it were real, so a JPEG without its EOI marker is refused.
    if buf[:2].tobytes() != b"\xff\xd8":
        return False
    tail = buf[-4096:].tobytes()  # cameras may append a little after EOI
    return b"\xff\xd9" not in tail

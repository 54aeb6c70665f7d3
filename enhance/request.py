"""One photo of a ``face_enhance`` batch, with every failure kept to that photo.

Triton hands the model several requests per ``execute``; an exception that escapes it fails
all of them, and the batch engine would then retry and fail a whole chunk for one bad photo.
So each step that touches one photo runs here and turns *any* failure into a
:class:`RequestError` for that photo alone: refusals of the input (``ImageError``,
``OptionError``, an output the encoders cannot write) keep their stable code, and anything
else OpenCV or numpy raises on a pathological photo becomes ``enhance_failed``. Both are the
photo's fault, so both are INVALID_ARG: retrying the same bytes gives the same answer. A
:class:`ServiceError` (a model called over BLS failed) is not the photo's fault and passes
through, so callers can tell "retry later" from "this photo is bad".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from enhance.options import OptionError, check_output_size, parse_options
from enhance.pipeline import Prepared, Result, encode_like, finish, prepare
from enhance.tiles import UpsampleFn
from pcb.image_decode import ImageError, decode_image


class ServiceError(RuntimeError):
    """A model this one calls (restorer, upsampler) failed or is down."""


class RequestError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def as_request_error(e: Exception) -> RequestError:
    if isinstance(e, RequestError):
        return e
    if isinstance(e, ImageError):
        return RequestError(e.code, e.message)
    if isinstance(e, OptionError):
        return RequestError(e.code, str(e))
    return RequestError("enhance_failed", f"{type(e).__name__}: {str(e).strip()[:300]}")


def _one_photo(step: Callable, *args):
    try:
        return step(*args)
    except ServiceError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever it was, it stays with this photo
        raise as_request_error(e) from e


def prepare_request(data: bytes | None, raw_options: bytes | str | None, detector,
                    max_pixels: int) -> tuple[Prepared, bytes]:
    """Encoded photo + options JSON -> (faces found and aligned, the source bytes)."""
    return _one_photo(_prepare, data, raw_options, detector, max_pixels)


def _prepare(data, raw_options, detector, max_pixels):
    if not data:
        raise ImageError("empty_image", "no image")
    source = bytes(data)
    opts = parse_options(raw_options)
    img = decode_image(source, max_pixels)
    h, w = img.shape[:2]
    check_output_size(w, h, opts.upscale)  # refuse before the work, not after
    return prepare(img, opts, detector), source


def finish_request(p: Prepared, restored: np.ndarray, source: bytes,
                   upsample: UpsampleFn | None) -> tuple[bytes, Result]:
    """Restored crops -> (the encoded result in the source's format, the result)."""
    return _one_photo(_finish, p, restored, source, upsample)


def _finish(p, restored, source, upsample):
    if len(restored) != len(p.crops):
        raise RuntimeError(f"restorer gave {len(restored)} faces for {len(p.crops)}")
    result = finish(p, restored, upsample if p.options.background else None)
    out, _ = encode_like(result.image, source)
    return out, result

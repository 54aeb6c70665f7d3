"""Checks on an uploaded image before it goes anywhere: content type, size cap, and the
dimensions from the header (an image bomb is refused without being decoded)."""

from __future__ import annotations

from fastapi import UploadFile

from gateway.core.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from pcb.image_decode import image_size

ALLOWED_TYPES = {"image/jpeg", "image/png", "image/jpg", "application/octet-stream"}


async def read_image(upload: UploadFile, max_bytes: int, max_pixels: int, field: str = "image") -> bytes:
    if upload.content_type and upload.content_type.split(";")[0].strip().lower() not in ALLOWED_TYPES:
        raise UnsupportedMediaType(f"{field}: {upload.content_type} is not a JPEG or PNG image")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: larger than {max_bytes} bytes")
    if not data:
        raise InvalidImage(f"{field}: the image is empty", "empty_image")
    size = image_size(data[:65536])
    if size is None:
        if data[:2] == b"\xff\xd8" or data[:8] == b"\x89PNG\r\n\x1a\n":
            raise InvalidImage(f"{field}: the image header is corrupt or truncated")
        raise UnsupportedMediaType(f"{field}: not a JPEG or PNG image", "unsupported_image")
    w, h = size
    if w * h > max_pixels:
        raise InvalidImage(f"{field}: {w}x{h} pixels is over the limit of {max_pixels}", "image_too_large")
    return data

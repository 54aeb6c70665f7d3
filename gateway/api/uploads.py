"""Checks on an uploaded image before it goes anywhere: content type, size cap, and the
dimensions from the header (``pcb.image_decode.check_header``, the one rule every path uses):
an image bomb is refused without being decoded, a strip longer than 20:1 (``MAX_ASPECT_RATIO``)
is 422 ``image_aspect_ratio`` before Triton sees it."""

from __future__ import annotations

import asyncio
from typing import BinaryIO

from fastapi import UploadFile

from gateway.core.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from pcb.image_decode import ImageError, check_header

ALLOWED_TYPES = {"image/jpeg", "image/png", "image/jpg", "application/octet-stream"}


def header_size(data: bytes, max_pixels: int, field: str = "image") -> tuple[int, int]:
    """The one header rule (``check_header``) for bytes from any route, as the API's errors;
    the image's (width, height)."""
    try:
        return check_header(data[:65536], max_pixels)
    except ImageError as e:
        # not an image at all is a media-type problem; a broken or oversized one is not
        cls = UnsupportedMediaType if e.code == "unsupported_image" else InvalidImage
        raise cls(f"{field}: {e.message}", e.code) from None


def checked(data: bytes, max_pixels: int, field: str = "image") -> bytes:
    header_size(data, max_pixels, field)
    return data


def _content_type(upload: UploadFile, field: str) -> None:
    if upload.content_type and upload.content_type.split(";")[0].strip().lower() not in ALLOWED_TYPES:
        raise UnsupportedMediaType(f"{field}: {upload.content_type} is not a JPEG or PNG image")


async def read_image(upload: UploadFile, max_bytes: int, max_pixels: int, field: str = "image") -> bytes:
    """A line frame, whole in memory: it goes to Triton as bytes (a few hundred KB)."""
    _content_type(upload, field)
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: larger than {max_bytes} bytes")
    return checked(data, max_pixels, field)


def _size_and_head(f: BinaryIO) -> tuple[int, bytes]:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    head = f.read(65536)
    f.seek(0)
    return size, head


async def probe_image(upload: UploadFile, max_bytes: int, max_pixels: int,
                      field: str = "image") -> tuple[int, tuple[int, int]]:
    """A large upload checked where it lies (the parser's spooled temporary file) without
    reading it into memory or touching the disk on the event loop: (bytes, (width, height))."""
    _content_type(upload, field)
    size, head = await asyncio.to_thread(_size_and_head, upload.file)
    if size > max_bytes:
        raise PayloadTooLarge(f"{field}: larger than {max_bytes} bytes")
    return size, header_size(head, max_pixels, field)

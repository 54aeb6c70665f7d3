"""Inspection routes: one side (``/v1/inspect``, paired by board id with the other side)
and both sides in one request (``/v1/inspect/dual``). Devices authenticate with the
``X-Device-Id`` / ``X-API-Key`` headers; ``Idempotency-Key`` makes retries safe."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from gateway.api.deps import Device, IdempotencyKey, Inspections
from gateway.api.uploads import read_image
from gateway.core.config import get_settings
from gateway.core.errors import ApiError
from gateway.services.inspection import Submission

router = APIRouter(prefix="/v1", tags=["inspection"])

BoardId = Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


@router.post("/inspect")
async def inspect(
    device: Device,
    inspections: Inspections,
    image: Annotated[UploadFile, File()],
    board_id: BoardId,
    side: Annotated[str | None, Form(pattern="^(left|right)$")] = None,
    captured_at: Annotated[float | None, Form()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict:
    side = side or device.side
    if side != device.side:
        raise ApiError(f"device {device.id} is registered for the {device.side} side, not {side}", "wrong_side")
    s = get_settings()
    t0 = time.perf_counter()
    data = await read_image(image, s.max_upload_bytes, s.max_pixels)
    sub = Submission(device, board_id, idempotency_key, captured_at, upload_ms=(time.perf_counter() - t0) * 1000)
    return await inspections.inspect_side(sub, side, data)


@router.post("/inspect/dual")
async def inspect_dual(
    device: Device,
    inspections: Inspections,
    left: Annotated[UploadFile, File()],
    right: Annotated[UploadFile, File()],
    board_id: BoardId,
    captured_at: Annotated[float | None, Form()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict:
    s = get_settings()
    t0 = time.perf_counter()
    left_b = await read_image(left, s.max_upload_bytes, s.max_pixels, "left")
    right_b = await read_image(right, s.max_upload_bytes, s.max_pixels, "right")
    sub = Submission(device, board_id, idempotency_key, captured_at, upload_ms=(time.perf_counter() - t0) * 1000)
    return await inspections.inspect_dual(sub, left_b, right_b)

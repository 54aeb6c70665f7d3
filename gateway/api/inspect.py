"""Inspection routes: one side (``/v1/inspect``, paired by board id with the other side)
and both sides in one request (``/v1/inspect/dual``). Devices authenticate with the
``X-Device-Id`` / ``X-API-Key`` headers; ``Idempotency-Key`` makes retries safe (the same
key with other content is 409). ``replay=true`` marks a frame the edge spooled and sends
again later: it is recorded, never paired, never given a pulse."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from gateway.api.deps import Device, IdempotencyKey, Inspections
from gateway.api.schemas.inspection import InspectAnswer, InspectDualAnswer
from gateway.api.uploads import read_image
from gateway.core.errors import ApiError
from gateway.services.inspection import Submission
from settings.environment import get_settings

router = APIRouter(prefix="/v1", tags=["inspection"])

BoardId = Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
CapturedAt = Annotated[float | None, Form(description="unix seconds, when the camera took the frame")]
Replay = Annotated[bool, Form(description="a spooled frame sent again: a record, never a pulse")]


def checked_captured_at(value: float | None) -> float | None:
    """A capture time must be a real moment near now: finite, not older than the longest a
    spool can hold it, not ahead of the gateway's clock by more than the allowed skew.
    Checked before any work, so a bad value costs no inference and stores nothing."""
    if value is None:
        return None
    s = get_settings()
    now = time.time()
    if not math.isfinite(value) or not now - s.captured_at_max_age_s <= value <= now + s.captured_at_max_skew_s:
        raise ApiError(f"captured_at must be unix seconds within {s.captured_at_max_age_s:.0f} s before and "
                       f"{s.captured_at_max_skew_s:.0f} s after the gateway's clock (got {value!r})",
                       "invalid_captured_at", status=422)
    return value


@router.post("/inspect", response_model=InspectAnswer)
async def inspect(
    device: Device,
    inspections: Inspections,
    image: Annotated[UploadFile, File()],
    board_id: BoardId,
    side: Annotated[str | None, Form(pattern="^(left|right)$")] = None,
    captured_at: CapturedAt = None,
    replay: Replay = False,
    idempotency_key: IdempotencyKey = None,
) -> dict:
    captured_at = checked_captured_at(captured_at)
    side = side or device.side
    if side != device.side:
        raise ApiError(f"device {device.id} is registered for the {device.side} side, not {side}", "wrong_side")
    s = get_settings()
    t0 = time.perf_counter()
    data = await read_image(image, s.max_upload_bytes, s.max_pixels)
    sub = Submission(device, board_id, idempotency_key, captured_at, upload_ms=(time.perf_counter() - t0) * 1000,
                     replay=replay)
    return await inspections.inspect_side(sub, side, data)


@router.post("/inspect/dual", response_model=InspectDualAnswer)
async def inspect_dual(
    device: Device,
    inspections: Inspections,
    left: Annotated[UploadFile, File()],
    right: Annotated[UploadFile, File()],
    board_id: BoardId,
    captured_at: CapturedAt = None,
    replay: Replay = False,
    idempotency_key: IdempotencyKey = None,
) -> dict:
    captured_at = checked_captured_at(captured_at)
    s = get_settings()
    t0 = time.perf_counter()
    left_b = await read_image(left, s.max_upload_bytes, s.max_pixels, "left")
    right_b = await read_image(right, s.max_upload_bytes, s.max_pixels, "right")
    sub = Submission(device, board_id, idempotency_key, captured_at, upload_ms=(time.perf_counter() - t0) * 1000,
                     replay=replay)
    return await inspections.inspect_dual(sub, left_b, right_b)

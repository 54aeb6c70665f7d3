"""Inspection routes: one side (``/v1/inspect``) and both sides in one request
(``/v1/inspect/dual``). Pairing of separately posted sides, persistence and GPIO routing
to the driving device are the next steps of this issue."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from gateway.api.uploads import read_image
from gateway.core.config import get_settings
from gateway.services.triton import DualResult, SideResult, TritonService
from pcb import taxonomy

router = APIRouter(prefix="/v1", tags=["inspection"])


def _side_json(s: SideResult) -> dict:
    tax = taxonomy.load()
    v = tax.verdict(s.verdict_code)
    return {
        "verdict": {"code": v.name, "label": v.label},
        "confidence": round(s.confidence, 4),
        "detections": [{"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)],
                        "class": d.class_name, "confidence": round(d.confidence, 4)} for d in s.detections],
    }


@router.post("/inspect")
async def inspect(
    request: Request,
    image: Annotated[UploadFile, File()],
    device_id: Annotated[str, Form(min_length=1, max_length=64)],
    side: Annotated[str, Form(pattern="^(left|right)$")],
    board_id: Annotated[str, Form(min_length=1, max_length=64)],
    captured_at: Annotated[float | None, Form()] = None,
) -> dict:
    settings = get_settings()
    t0 = time.perf_counter()
    data = await read_image(image, settings.max_upload_bytes, settings.max_pixels)
    t_read = time.perf_counter()
    triton: TritonService = request.app.state.triton
    result, infer_ms = await triton.inspect(data)
    out = {"inspection_id": str(uuid.uuid4()), "device_id": device_id, "side": side, "board_id": board_id,
           **_side_json(result),
           "model": {"name": "pcb_detector", "version": result.detector_version},
           "timings_ms": {"read": round((t_read - t0) * 1000, 2), "inference": round(infer_ms, 2),
                          "total": round((time.perf_counter() - t0) * 1000, 2)}}
    return out


@router.post("/inspect/dual")
async def inspect_dual(
    request: Request,
    left: Annotated[UploadFile, File()],
    right: Annotated[UploadFile, File()],
    device_id: Annotated[str, Form(min_length=1, max_length=64)],
    board_id: Annotated[str, Form(min_length=1, max_length=64)],
) -> dict:
    settings = get_settings()
    t0 = time.perf_counter()
    left_b = await read_image(left, settings.max_upload_bytes, settings.max_pixels, "left")
    right_b = await read_image(right, settings.max_upload_bytes, settings.max_pixels, "right")
    triton: TritonService = request.app.state.triton
    r: DualResult = await triton.inspect_dual(left_b, right_b)
    v = taxonomy.load().verdict(r.board_verdict_code)
    return {"inspection_id": str(uuid.uuid4()), "device_id": device_id, "board_id": board_id,
            "verdict": {"code": v.name, "label": v.label}, "confidence": round(r.board_confidence, 4),
            "left": _side_json(r.left), "right": _side_json(r.right),
            "gpio": {"pin": r.gpio_pin, "duration_ms": r.gpio_duration_ms},
            "model": {"name": "pcb_detector", "version": r.detector_version},
            "timings_ms": {"inference": round(r.inference_ms, 2),
                           "total": round((time.perf_counter() - t0) * 1000, 2)}}

"""The seed's (001) Flask API shapes, so its Pi scripts keep working unchanged:
``POST /predict`` ({"frame": base64 JPEG, "camera_id": "left"|"right", "timestamp"}) and
``POST /predict_dual`` ({"frame_left", "frame_right"}). Verdicts come back as the seed's
Korean labels (``defect_type``) and the GPIO signal as ``{"pin", "duration_ms"}``.

Off by default (``SEED_COMPAT=true`` switches them on). The seed scripts send no
credentials, so a call is accepted with a registered device's key (``X-Device-Id`` /
``X-API-Key``: it acts as that device), or without one only from the networks in
``SEED_COMPAT_ALLOW_NETS`` (then as the devices named by ``SEED_LEFT_DEVICE`` /
``SEED_RIGHT_DEVICE``; left drives GPIO); either way rate limited per client address.
Each call is a lone frame: no pairing, as in the seed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from gateway.api.deps import Inspections, current_device
from gateway.api.schemas.seed import PredictAnswer, PredictDualAnswer
from gateway.api.uploads import checked
from gateway.core.errors import ApiError, InvalidImage, NotFound, PayloadTooLarge, Unauthorized
from gateway.core.security import client_address, failed_auth, limit
from gateway.services.devices import DeviceInfo
from gateway.services.inspection import Submission
from pcb import taxonomy
from settings.environment import get_settings

router = APIRouter(tags=["seed compatibility"])


class PredictIn(BaseModel):
    frame: str = Field(min_length=1)
    camera_id: str = Field(default="left", pattern="^(left|right)$")
    timestamp: float | str | None = None


class PredictDualIn(BaseModel):
    frame_left: str = Field(min_length=1)
    frame_right: str = Field(min_length=1)
    timestamp: float | str | None = None


def _enabled() -> None:
    if not get_settings().seed_compat:
        raise NotFound("seed compatibility routes are switched off (SEED_COMPAT=false)")


def _allowed_nets() -> list:
    nets = [n.strip() for n in get_settings().seed_compat_allow_nets.split(",") if n.strip()]
    return [ipaddress.ip_network(n, strict=False) for n in nets]


async def seed_caller(request: Request, x_device_id: Annotated[str | None, Header()] = None,
                      x_api_key: Annotated[str | None, Header()] = None) -> DeviceInfo | None:
    """The device a seed call acts as: its own (with a key), or None for an allow-listed
    network (the configured seed devices). Anyone else: 401."""
    _enabled()
    limit(get_settings().seed_compat_rate, "seed", client_address(request))
    if x_device_id is not None:
        return await current_device(request, x_device_id, x_api_key)
    try:
        addr = ipaddress.ip_address(client_address(request))
    except ValueError:
        addr = None
    if addr is not None and any(addr in net for net in _allowed_nets()):
        return None
    failed_auth(request)
    raise Unauthorized("seed routes need X-Device-Id + X-API-Key, or a source network in SEED_COMPAT_ALLOW_NETS",
                       "unauthorized")


SeedCaller = Annotated[DeviceInfo | None, Depends(seed_caller)]


def _decode_b64(s: str, field: str) -> bytes:
    limit = get_settings().max_upload_bytes
    if len(s) > limit * 4 // 3 + 4:
        raise PayloadTooLarge(f"{field}: larger than {limit} bytes")
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{field}: not valid base64", "invalid_base64") from None
    return checked(data, get_settings().max_pixels, field)


def _device(side: str) -> DeviceInfo:
    s = get_settings()
    return DeviceInfo(s.seed_left_device if side == "left" else s.seed_right_device, side, side == "left", "")


def _label(code: str) -> str:
    return taxonomy.load().verdict(code).label


def _boxes(dets: list[dict]) -> list[dict]:
    return [{"x1": d["box"][0], "y1": d["box"][1], "x2": d["box"][2], "y2": d["box"][3],
             "confidence": d["confidence"], "class": d["class"]} for d in dets]


@router.post("/predict", response_model=PredictAnswer)
async def predict(body: PredictIn, inspections: Inspections, caller: SeedCaller) -> dict:
    data = _decode_b64(body.frame, "frame")
    t0 = time.perf_counter()
    board = f"seed-{uuid.uuid4().hex[:12]}"
    device = caller or _device(body.camera_id)
    if device.side != body.camera_id:
        raise ApiError(f"device {device.id} is registered for the {device.side} side", "wrong_side")
    r = await inspections.inspect_side(Submission(device, board, paired=False), body.camera_id, data)
    return {"status": "ok", "camera_id": body.camera_id, "timestamp": body.timestamp,
            "defect_type": _label(r["verdict"]["code"]), "confidence": r["confidence"],
            "boxes": _boxes(r["detections"]), "inference_time_ms": round((time.perf_counter() - t0) * 1000, 2),
            "inspection_id": r["inspection_id"]}


@router.post("/predict_dual", response_model=PredictDualAnswer)
async def predict_dual(body: PredictDualIn, inspections: Inspections, caller: SeedCaller) -> dict:
    left, right = _decode_b64(body.frame_left, "frame_left"), _decode_b64(body.frame_right, "frame_right")
    board = f"seed-{uuid.uuid4().hex[:12]}"
    r = await inspections.inspect_dual(Submission(caller or _device("left"), board, paired=False), left, right)
    if r["gpio"] is None:
        raise ApiError("this board already had its GPIO decision", "duplicate_board")

    def side(x: dict) -> dict:
        return {"defect_type": _label(x["verdict"]["code"]), "confidence": x["confidence"],
                "boxes": _boxes(x["detections"])}

    return {"status": "ok", "final_defect_type": _label(r["verdict"]["code"]), "gpio_signal": r["gpio"],
            "left_result": side(r["left"]), "right_result": side(r["right"]),
            "note": "GPIO control is performed by Raspberry Pi 1 (left) only",
            "inspection_id": r["inspection_id"]}

"""Dependencies shared by the routes (one place, ``Annotated[..., Depends(...)]``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.core.errors import Unauthorized
from gateway.core.metrics import RATE_LIMITED
from gateway.core.security import failed_auth, guard_guessing
from gateway.services.devices import DeviceInfo
from gateway.services.inspection import InspectionService


def inspection_service(request: Request) -> InspectionService:
    return request.app.state.inspections


def current_device(
    request: Request,
    x_device_id: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> DeviceInfo:
    guard_guessing(request)
    try:
        device = request.app.state.devices.authenticate(x_device_id, x_api_key)
    except Unauthorized:
        failed_auth(request)  # key guessing is limited per client address
        raise
    try:
        request.app.state.rate_limiter.check(device.id)
    except Exception:
        RATE_LIMITED.labels(device.id).inc()
        raise
    return device


Inspections = Annotated[InspectionService, Depends(inspection_service)]
Device = Annotated[DeviceInfo, Depends(current_device)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]

"""Dependencies shared by the routes (one place, ``Annotated[..., Depends(...)]``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.core.metrics import RATE_LIMITED
from gateway.core.security import auth_lock, failed_auth, guard_guessing, limit_device
from gateway.services.devices import DeviceInfo
from gateway.services.inspection import InspectionService


# async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hand-off
# each way on every board for what is a dictionary lookup
async def inspection_service(request: Request) -> InspectionService:
    return request.app.state.inspections


async def current_device(
    request: Request,
    x_device_id: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> DeviceInfo:
    guard_guessing(request)
    registry = request.app.state.devices
    device = registry.cached(x_device_id, x_api_key)  # a known device: in memory, on the loop
    if device is None:
        # counted now, on the loop with no await since the budget was checked, so a burst of
        # concurrent guesses is counted one by one (and a right key behind them meets the
        # 429); a device registered through another worker a moment ago costs one count
        failed_auth(request)
        async with auth_lock(request):  # one reload at a time
            # unknown here: registered through another worker? the reload reads the database
            device = await asyncio.to_thread(registry.authenticate, x_device_id, x_api_key)
    try:
        limit_device(device.id)
    except Exception:
        RATE_LIMITED.labels(device.id).inc()
        raise
    return device


Inspections = Annotated[InspectionService, Depends(inspection_service)]
Device = Annotated[DeviceInfo, Depends(current_device)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]

"""Edge housekeeping routes: heartbeats (so operators see each Pi online), line sessions
(board ids that never repeat across restarts) and the GPIO table the edge uses as its
offline default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from gateway.api.deps import Device, current_device
from gateway.api.schemas.edge import Heartbeat, LineSession, TaxonomyOut
from gateway.core.security import SESSION_COOKIE, authorize, bearer_of
from pcb import taxonomy

router = APIRouter(prefix="/v1", tags=["edge"])


@router.post("/heartbeat", response_model=Heartbeat)
async def heartbeat(device: Device) -> dict:
    # authenticating already stamped last_seen
    return {"device_id": device.id, "side": device.side, "drives_gpio": device.drives_gpio}


class LineSessionIn(BaseModel):
    line_id: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
    # random per edge start: the same start asking twice (a lost answer) gets the same session
    start_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = "unknown"


@router.post("/line-session", response_model=LineSession)
async def line_session(device: Device, body: LineSessionIn, request: Request) -> dict:
    """The session part of this edge's board ids for this start (``gateway/services/line_sessions.py``)."""
    session = await request.app.state.line_sessions.open(body.line_id, device.side, body.start_id)
    return {"line_id": body.line_id, "session": session, "side": device.side}


async def device_or_viewer(request: Request, x_device_id: Annotated[str | None, Header()] = None) -> None:
    """The GPIO table is for edges (their offline default) and for people reading verdicts."""
    if x_device_id is not None:
        await current_device(request, x_device_id, request.headers.get("x-api-key"))
    else:
        await authorize(request, "viewer", bearer_of(request), request.cookies.get(SESSION_COOKIE))


@router.get("/taxonomy", dependencies=[Depends(device_or_viewer)], response_model=TaxonomyOut)
async def gpio_table() -> dict:
    tax = taxonomy.load()
    return {"verdicts": [{"code": v.name, "label": v.label, "severity": v.code,
                          "gpio": {"pin": v.gpio.pin, "duration_ms": v.gpio.duration_ms}} for v in tax.verdicts],
            "classes": [{"id": c.id, "name": c.name, "category": c.category, "verdict": c.verdict.name}
                        for c in tax.classes]}

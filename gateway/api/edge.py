"""Edge housekeeping routes: heartbeats (so operators see each Pi online) and the GPIO
table the edge uses as its offline default."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import Device
from pcb import taxonomy

router = APIRouter(prefix="/v1", tags=["edge"])


@router.post("/heartbeat")
async def heartbeat(device: Device) -> dict:
    # authenticating already stamped last_seen
    return {"device_id": device.id, "side": device.side, "drives_gpio": device.drives_gpio}


@router.get("/taxonomy")
async def gpio_table() -> dict:
    tax = taxonomy.load()
    return {"verdicts": [{"code": v.name, "label": v.label, "severity": v.code,
                          "gpio": {"pin": v.gpio.pin, "duration_ms": v.gpio.duration_ms}} for v in tax.verdicts],
            "classes": [{"id": c.id, "name": c.name, "category": c.category, "verdict": c.verdict.name}
                        for c in tax.classes]}

"""Edge housekeeping answers: heartbeat, line session, the GPIO table."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.api.schemas.inspection import Gpio


class Heartbeat(BaseModel):
    device_id: str
    side: str
    drives_gpio: bool


class LineSession(BaseModel):
    line_id: str
    session: str = Field(description="the session part of this edge's board ids for this start")
    side: str


class TaxonomyVerdict(BaseModel):
    code: str = Field(description="the verdict's name")
    label: str
    severity: int = Field(description="its code: higher is more severe, 0 passes the board")
    gpio: Gpio


class TaxonomyClass(BaseModel):
    id: int
    name: str
    category: str
    verdict: str


class TaxonomyOut(BaseModel):
    verdicts: list[TaxonomyVerdict]
    classes: list[TaxonomyClass]

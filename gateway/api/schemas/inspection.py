"""What ``/v1/inspect`` and ``/v1/inspect/dual`` answer (built by
``gateway/services/inspection.py``). The Pi edge reads ``gpio``, ``verdict``, ``board`` and
``detections`` (``pi_edge/edge.py``, ``pi_edge/sender.py``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VerdictOut(BaseModel):
    code: str = Field(description="the verdict's name in the taxonomy (normal, solder_defect, ...)")
    label: str = Field(description="its display label (the seed's Korean)")


class Detection(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels", min_length=4, max_length=4)
    class_: str = Field(alias="class", description="the defect class")
    confidence: float


class Gpio(BaseModel):
    pin: int = Field(description="BCM pin")
    duration_ms: int


class BoardOut(BaseModel):
    verdict: VerdictOut
    confidence: float
    pairing: str = Field(description="paired, partial, late, pending, single or replay")
    partial: bool


class ModelOut(BaseModel):
    name: str
    version: int


class SideTimings(BaseModel):
    upload: float
    inference: float
    pairing_wait: float
    total: float


class DualTimings(BaseModel):
    upload: float
    inference: float
    total: float


class InspectAnswer(BaseModel):
    """One side of one board. ``gpio`` is set only for the request that owns the board's
    pulse (the driving device's); everyone else gets null."""

    inspection_id: str
    board_id: str
    device_id: str
    side: str
    verdict: VerdictOut
    confidence: float
    detections: list[Detection]
    board: BoardOut
    gpio: Gpio | None
    model: ModelOut
    timings_ms: SideTimings
    anomaly_score: float | None = Field(
        None, description="the anomaly model's score of this side, 1.0 = its threshold; null when the "
                          "served detector version has no anomaly head (python -m export anomaly)")


class DualSide(BaseModel):
    verdict: VerdictOut
    confidence: float
    detections: list[Detection]
    anomaly_score: float | None = Field(None, description="as in InspectAnswer")


class InspectDualAnswer(BaseModel):
    inspection_id: str
    board_id: str
    device_id: str
    verdict: VerdictOut
    confidence: float
    left: DualSide
    right: DualSide
    gpio: Gpio | None
    model: ModelOut
    timings_ms: DualTimings

"""The seed's (001) Flask answers for ``/predict`` and ``/predict_dual``, field for field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.api.schemas.inspection import Gpio


class SeedBox(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_: str = Field(alias="class")


class PredictAnswer(BaseModel):
    status: str
    camera_id: str
    timestamp: float | str | None = Field(description="the request's timestamp, echoed")
    defect_type: str = Field(description="the verdict's Korean label")
    confidence: float
    boxes: list[SeedBox]
    inference_time_ms: float
    inspection_id: str


class SeedSide(BaseModel):
    defect_type: str
    confidence: float
    boxes: list[SeedBox]


class PredictDualAnswer(BaseModel):
    status: str
    final_defect_type: str
    gpio_signal: Gpio
    left_result: SeedSide
    right_result: SeedSide
    note: str
    inspection_id: str

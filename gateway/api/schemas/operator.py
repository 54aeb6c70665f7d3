"""The operator REST answers (the seed's WinForms API): history, statistics, system status,
configuration and logs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from gateway.api.schemas.inspection import Detection
from pcb import taxonomy


class InspectionOut(BaseModel):
    id: str
    board_id: str
    device_id: str
    camera_side: str
    verdict: str
    verdict_label: str
    confidence: float
    board_verdict: str | None
    pairing: str
    boxes: list[Detection] | dict[str, list[Detection]] | None = Field(
        description="this row's detections; for a dual row {left: [...], right: [...]}")
    gpio_pin: int | None
    gpio_duration_ms: int | None
    has_image: bool
    model_version: int | None
    latency_ms: float | None
    anomaly_score: float | None = Field(
        None, description="the anomaly model's score, 1.0 = its threshold (null when it is not served)")
    created_at: str = Field(description="ISO 8601, UTC")


class InspectionPage(BaseModel):
    items: list[InspectionOut]
    page: int | None = Field(description="null when paging by cursor")
    page_size: int
    total: int | None = Field(description="null when paging by cursor")
    next_cursor: str | None


class VerdictCount(BaseModel):
    name: str
    label: str
    code: int
    count: int


def statistics_model(tax: taxonomy.Taxonomy) -> type[BaseModel]:
    """The statistics answer for ``tax``: the seed's fields, with one ``<verdict>_count`` per
    verdict in the taxonomy (so a verdict added there is documented here too), then the
    same counts as a list."""
    counts: dict[str, Any] = {f"{v.name}_count": (int, Field(description=f"board decisions {v.name} ({v.label})"))
                              for v in tax.verdicts}
    return create_model(
        "Statistics",
        __doc__="Board decisions (the rows that carried the GPIO command) between two plant days.",
        start_date=(str, ...),
        end_date=(str, ...),
        total_inspections=(int, ...),
        **counts,
        defect_rate=(float, Field(description="percent of decisions that are not the ok verdict")),
        avg_latency_ms=(float | None, ...),
        verdicts=(list[VerdictCount], Field(description="every verdict of the taxonomy, in code order")),
    )


# the taxonomy the process serves (taxonomy.load() reads PCB_TAXONOMY once, at start)
Statistics = statistics_model(taxonomy.load())


class Gpu(BaseModel):
    index: int
    utilization_percent: int
    memory_used_mb: int
    memory_total_mb: int


class DeviceStatus(BaseModel):
    device_id: str
    side: str
    drives_gpio: bool
    online: bool
    last_seen: float | None = Field(description="unix seconds")


class SystemStatus(BaseModel):
    server: str
    cpu_percent: float
    memory_percent: float
    gpu: list[Gpu] | None = Field(description="null without NVML")
    database: bool
    redis: bool | None = Field(description="null when Redis is not used")
    triton: bool
    outbox_depth: int | None = Field(description="null when the outbox did not answer")
    devices: list[DeviceStatus]


class SystemLogOut(BaseModel):
    level: str
    source: str
    message: str
    # open on purpose: each source logs its own context (board id, inspection id, ...)
    details: dict[str, Any] | None
    created_at: str


class SystemLogPage(BaseModel):
    items: list[SystemLogOut]
    page: int
    page_size: int
    total: int

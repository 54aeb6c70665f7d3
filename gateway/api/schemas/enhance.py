"""Photo enhancement answers (built by ``gateway/services/enhance*.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class EnhanceOptions(BaseModel):
    """The options a task runs with (``enhance.options.EnhanceOptions``)."""

    upscale: int
    quality: str
    background: bool
    tile: int
    tile_pad: int
    weight: float
    max_faces: int


class TaskError(BaseModel):
    code: str
    message: str


class EnhanceAccepted(BaseModel):
    task_id: str
    batch_id: str
    state: str
    status_url: str
    download_url: str


class AcceptedTask(BaseModel):
    task_id: str
    index: int
    filename: str


class EnhanceBatchAccepted(BaseModel):
    batch_id: str
    total: int
    state: str
    options: EnhanceOptions
    tasks: list[AcceptedTask]
    status_url: str
    events_url: str
    download_url: str


class EnhanceTask(BaseModel):
    """One photo. ``download_url`` is there once it completed, ``duration_ms`` once it ran
    (absent before, never null)."""

    task_id: str
    batch_id: str | None
    index: int
    filename: str
    state: str = Field(description="queued, processing, completed, failed or cancelled")
    progress: float
    options: EnhanceOptions
    created_at: float = Field(description="unix seconds")
    started_at: float | None
    finished_at: float | None
    faces: int | None
    # open on purpose: what the enhancement model reports about its run (its INFO tensor)
    info: dict[str, Any] | None
    error: TaskError | None
    download_url: str | None = None
    duration_ms: float | None = None


class TaskCancelled(BaseModel):
    task_id: str
    cancelled: int
    state: str


class EnhanceBatchStatus(BaseModel):
    batch_id: str
    state: str = Field(description="queued, processing, completed or finished (some failed or cancelled)")
    total: int
    queued: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    progress: float
    created_at: float
    download_url: str
    items: list[EnhanceTask]


class BatchCancelled(BaseModel):
    batch_id: str
    cancelled: int


class LatencyStats(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    samples: int


class MemoryUse(BaseModel):
    rss_bytes: int
    results_on_disk_bytes: int


class EnhanceTaskCounts(BaseModel):
    queued: int
    processing: int
    completed: int
    failed: int
    cancelled: int


class EnhancePerformance(BaseModel):
    model: str
    concurrency: int
    queue_depth: int
    processing: int
    tasks: EnhanceTaskCounts
    completed_total: int
    faces_total: int
    throughput_per_min: int
    throughput_images_per_s: float
    latency_ms: LatencyStats
    memory: MemoryUse
    result_ttl_s: float
    uptime_s: float

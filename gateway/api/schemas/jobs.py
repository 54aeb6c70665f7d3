"""Batch job answers (built by ``batch/store.py`` and ``batch/results.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ItemCounts(BaseModel):
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int


class JobProgress(BaseModel):
    job_id: str
    name: str
    kind: str = Field(description="inspect or enhance")
    state: str = Field(description="running, completed or cancelled")
    priority: int = Field(description="0 low ... 3 urgent")
    total: int
    counts: ItemCounts
    percent: float
    items_per_s: float = Field(description="over the last 30 s while running; overall once finished")
    eta_s: float | None
    elapsed_s: float
    chunk_size: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class Retried(BaseModel):
    retried: int = Field(description="failed items sent again")


# bases are laid out last to first: ``retried`` comes before the progress, as it always has
class JobRetried(JobProgress, Retried):
    pass


class JobItem(BaseModel):
    id: int
    seq: int
    name: str
    state: str
    attempts: int
    worker: str | None
    duration_ms: float | None
    finished_at: str | None
    # open on purpose: each job kind's worker writes its own result (an inspection's verdict
    # and defects, an enhancement's output file and faces)
    result: dict[str, Any] | None
    error: str | None


class JobTimings(BaseModel):
    elapsed_s: float
    items_per_s: float
    item_ms_p50: float | None
    item_ms_p95: float | None


class JobSummary(BaseModel):
    items: int
    counts: ItemCounts
    verdicts: dict[str, int] = Field(description="completed items per verdict name")
    defect_rate: float | None = Field(description="share of completed items whose verdict is not the ok one")
    classes: dict[str, int]
    failure_reasons: dict[str, int]
    faces: int
    timings: JobTimings


class JobResults(BaseModel):
    """``format=json``: the whole job as one document (sent as an attachment)."""

    job: JobProgress
    summary: JobSummary
    items: list[JobItem]


class Tuning(BaseModel):
    batch_size: int
    concurrency: int

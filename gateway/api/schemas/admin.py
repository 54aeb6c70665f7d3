"""Admin answers: model hot-swap, devices, principals, configuration, outbox quarantine."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelVersions(BaseModel):
    model: str
    on_disk: list[int]
    served: list[int] = Field(description="versions the model's policy serves")
    ready: list[int] = Field(description="versions Triton reports ready")
    lineage: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per version on disk: its training lineage (lineage.json) and anomaly "
                                          "head fit (anomaly.json), when it has them")


class ModelServed(BaseModel):
    model: str
    served: list[int]


class ShadowState(BaseModel):
    model: str
    shadow: str = Field(description="the name the candidate is loaded under in Triton")
    version: int | None = Field(description="the shadowed version; null once stopped")


class ShadowClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class")
    served: int = Field(description="detections of this class by the served version, over the compared frames")
    shadow: int
    difference: int = Field(description="shadow - served")


class ShadowDisagreement(BaseModel):
    served: str = Field(description="the served version's side verdict")
    shadow: str
    count: int


class ShadowLatency(BaseModel):
    shadow_p50: float | None
    shadow_p95: float | None
    served_p50: float | None
    served_p95: float | None


class ShadowMirrorStats(BaseModel):
    active_version: int | None = Field(description="the shadow version this gateway worker sees loaded")
    share: float
    offered: int
    mirrored: int
    dropped: int = Field(description="frames not mirrored because the queue was full (the line first)")
    failed: int


class ShadowReport(BaseModel):
    """Served vs shadow answers for one shadow version, from the stored comparisons (all
    gateway workers); ``mirror`` is this worker's own counters."""
    model: str
    version: int | None
    samples: int = Field(description="sides answered by both")
    agreement: float | None = Field(description="share of sides with the same verdict (what the promotion floor reads)")
    live_versions: list[int]
    classes: list[ShadowClass]
    disagreements: list[ShadowDisagreement]
    latency_ms: ShadowLatency
    mirror: ShadowMirrorStats


class DeviceCreated(BaseModel):
    device_id: str
    side: str
    drives_gpio: bool
    api_key: str = Field(description="shown this once; only its hash is stored")


class DeviceOut(BaseModel):
    device_id: str
    side: str
    drives_gpio: bool
    enabled: bool
    name: str
    last_seen: float | None = Field(description="unix seconds")


class DeviceDisabled(BaseModel):
    device_id: str
    enabled: bool


class QuarantinedRow(BaseModel):
    id: str
    kind: str = Field(description="inspection or system_log")
    # open on purpose: the row as it was refused, whatever its kind and format
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: float = Field(description="unix seconds")
    quarantined_at: float


class QuarantinePage(BaseModel):
    total: int
    rows: list[QuarantinedRow]


class Requeued(BaseModel):
    requeued: int


class PrincipalOut(BaseModel):
    id: str
    name: str
    role: str
    enabled: bool


class PrincipalCreated(PrincipalOut):
    api_key: str = Field(description="shown this once; only its hash is stored")


class PrincipalRevoked(BaseModel):
    id: str
    enabled: bool


class ConfigUpdated(BaseModel):
    updated: list[str]

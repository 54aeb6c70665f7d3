"""Admin answers: model hot-swap, devices, principals, configuration, outbox quarantine."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelVersions(BaseModel):
    model: str
    on_disk: list[int]
    served: list[int] = Field(description="versions the model's policy serves")
    ready: list[int] = Field(description="versions Triton reports ready")


class ModelServed(BaseModel):
    model: str
    served: list[int]


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

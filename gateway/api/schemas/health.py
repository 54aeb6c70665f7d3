"""Probes and the seed's status route."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    status: Literal["healthy", "degraded"]
    triton: bool


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready"]
    triton: bool
    outbox: bool


class NotReady(BaseModel):
    code: Literal["not_ready"]
    message: str
    triton: bool
    outbox: bool

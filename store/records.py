"""``InspectionRecord``: one inspection row as the gateway builds it, the outbox carries it
(JSON, until the database takes it) and the database writer turns it into an
``Inspection`` table row.

One type for all three, so a field that does not match the table fails where the record is
built (and in ``tests/test_api_contract.py``), never in the drainer at 3 a.m. Its JSON
(``to_outbox``) is the outbox's stored format: ISO dates without a zone (naive UTC), the
other fields as the table names them. Rows written before this type existed load as they
are (``from_outbox``): the nullable columns may be missing, as ``Inspection(**row)`` allowed.

No length limits here on purpose: the database is the judge of what it stores, and a row it
refuses is quarantined by the drainer with the database's own reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from store.models import Inspection, utcnow


class InspectionRecord(BaseModel):
    # extra="forbid": a key the table does not have is an error here, not a TypeError later
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    board_id: str
    device_id: str
    camera_side: str  # left / right, or "both" for one dual request
    verdict: str  # this row's side(s), a taxonomy verdict name
    verdict_code: int
    confidence: float
    board_verdict: str | None = None  # the board's, when known (the GPIO row is the decision)
    board_verdict_code: int | None = None
    pairing: str = "single"
    # the answer's detections: a list for one side, {"left": [...], "right": [...]} for dual
    boxes: list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None = None
    gpio_pin: int | None = None
    gpio_duration_ms: int | None = None
    image_path: str | None = None
    model_version: int | None = None
    latency_ms: float | None = None
    anomaly_score: float | None = None  # when the anomaly model is served (1.0 = its threshold)
    request_key: str | None = None  # "<device>:<Idempotency-Key>": one row per request (db_writer.py)
    captured_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def to_outbox(self) -> dict[str, Any]:
        """The row as the outbox stores it (JSON-ready)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_outbox(cls, payload: dict[str, Any]) -> InspectionRecord:
        """A stored row, in today's format or an older one (missing nullable fields)."""
        return cls.model_validate(payload)

    def to_model(self) -> Inspection:
        return Inspection(**self.model_dump())

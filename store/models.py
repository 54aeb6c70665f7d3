"""Tables (SQLAlchemy 2). The seed's ``inspections`` / ``system_logs`` / ``system_config``,
plus what the gateway needs: ``devices`` and ``idempotency_keys``.

Verdicts are stored as their name (``normal``, ``solder_defect``, ...) and code; the Korean
display label comes from the taxonomy, never from the database.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Inspection(Base):
    __tablename__ = "inspections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid, made by the gateway
    board_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    # one row per posted image side (left / right), or "both" for one dual request
    camera_side: Mapped[str] = mapped_column(String(8))
    verdict: Mapped[str] = mapped_column(String(32), index=True)  # this row's side(s)
    verdict_code: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    # the board's fused verdict as known when this row was answered; the row that carries
    # the GPIO decision (gpio_pin set) is the board's decision: statistics count those
    board_verdict: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    board_verdict_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pairing: Mapped[str] = mapped_column(String(16), default="single")  # paired/partial/late/dual/single
    boxes: Mapped[dict | list | None] = mapped_column(JSON, nullable=True)
    image_path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    gpio_pin: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpio_duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the anomaly model's score (1.0 = its threshold; the higher side for a dual row), when served
    anomaly_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # "<device>:<Idempotency-Key>" of the request that made the row: one row per request in
    # the database even when a retry reached another replica while Redis (the shared
    # idempotency record) was down, and each replica stored its own answer (db_writer.py)
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    __table_args__ = (Index("ix_inspections_created_verdict", "created_at", "verdict"),
                      Index("uq_inspections_request_key", "request_key", unique=True))


class SystemLog(Base):
    __tablename__ = "system_logs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid: re-sent rows stay single
    level: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class SystemConfig(Base):
    __tablename__ = "system_config"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    side: Mapped[str] = mapped_column(String(8))  # left / right
    drives_gpio: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_hash: Mapped[str] = mapped_column(String(128))  # sha256 of a random key
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Principal(Base):
    """A person or an application with an API key and one role (viewer, operator, admin);
    edge devices are in ``devices``. Only the key's SHA-256 is stored."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, the key's public part
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    api_key_hash: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    inspection_id: Mapped[str] = mapped_column(String(36))
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("device_id", "key", name="uq_idempotency_device_key"),)


class BatchJob(Base):
    """A batch-engine job (batch). Its progress is counted from its items' states,
    never kept as counters, so a redelivered task cannot count an item twice."""

    __tablename__ = "batch_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16), default="inspect")  # inspect / enhance
    priority: Mapped[int] = mapped_column(Integer)  # batch.priority.Priority
    state: Mapped[str] = mapped_column(String(16), index=True)  # running/completed/cancelled
    total: Mapped[int] = mapped_column(Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # "<submitter>:<Idempotency-Key>": a retried submission finds its job instead of a twin;
    # the fingerprint of what was submitted tells a retry from another job under the same key
    client_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    client_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (UniqueConstraint("client_key", name="uq_batch_jobs_client_key"),)


class BatchChunk(Base):
    """The unit handed to the broker: one task = one chunk = one Triton batch. The scheduler
    keeps only a window of chunks in the broker so later, more urgent jobs can overtake."""

    __tablename__ = "batch_chunks"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # queued / dispatched / done
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dispatches: Mapped[int] = mapped_column(Integer, default=0)
    # False from a dispatch's commit until its message is known to be out (batch/store.py)
    published: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    __table_args__ = (Index("ix_batch_chunks_state", "state", "job_id"),)


class BatchItem(Base):
    __tablename__ = "batch_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer)  # order in the job
    chunk: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(1024))  # file path the workers read
    name: Mapped[str] = mapped_column(String(512))  # display name (relative path in the job)
    state: Mapped[str] = mapped_column(String(16))  # pending/processing/completed/failed/cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_batch_items_job_state", "job_id", "state"),
                      Index("ix_batch_items_job_chunk", "job_id", "chunk"),
                      UniqueConstraint("job_id", "seq", name="uq_batch_items_job_seq"))


class Feedback(Base):
    """An operator's correction of one inspection's verdict (issue 18): the flagged boards
    become a YOLO data set (``python -m export feedback``) to train the next version on."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid
    inspection_id: Mapped[str] = mapped_column(String(36), index=True)
    side: Mapped[str] = mapped_column(String(8))  # left / right: which image the correction is about
    kind: Mapped[str] = mapped_column(String(16))  # false_reject / false_accept / wrong_class
    # corrected boxes, image pixels: [{"box": [x1, y1, x2, y2], "class": name}]; null = the
    # detector's boxes stand (a false reject: the board is good, no box at all)
    boxes: Mapped[list | None] = mapped_column(JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    principal: Mapped[str] = mapped_column(String(128))  # who (the principal's name)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class ShadowResult(Base):
    """One live frame answered by the served detector and mirrored to a shadow version
    (issue 18): both answers, for the agreement report before a promotion."""

    __tablename__ = "shadow_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid
    inspection_id: Mapped[str] = mapped_column(String(36), index=True)
    model: Mapped[str] = mapped_column(String(64))
    live_version: Mapped[int] = mapped_column(Integer)
    shadow_version: Mapped[int] = mapped_column(Integer)
    live_verdict: Mapped[str] = mapped_column(String(32))
    shadow_verdict: Mapped[str] = mapped_column(String(32))
    agree: Mapped[bool] = mapped_column(Boolean)
    live_classes: Mapped[dict] = mapped_column(JSON)  # {class: count}
    shadow_classes: Mapped[dict] = mapped_column(JSON)
    # both answers whole: each side's detections [{"box", "class", "confidence"}]
    live_detections: Mapped[list] = mapped_column(JSON)
    shadow_detections: Mapped[list] = mapped_column(JSON)
    live_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    shadow_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_shadow_results_model_version", "model", "shadow_version", "created_at"),
                      Index("ix_shadow_results_model_created", "model", "created_at"))

"""Operator REST (the seed's WinForms API): history, statistics, defect images, system
status and configuration. Database reads run in the thread pool; a dead database is a 503."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psutil
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import and_, func, or_, select

from gateway.api import db_bounds
from gateway.api.schemas.operator import (
    InspectionOut,
    InspectionPage,
    Statistics,
    SystemLogPage,
    SystemStatus,
)
from gateway.core.errors import ApiError, NotFound
from gateway.core.security import require
from pcb import taxonomy
from settings.environment import get_settings
from store.models import Inspection, SystemConfig, SystemLog
from store.records import InspectionRecord

router = APIRouter(prefix="/api", tags=["operator"], dependencies=[Depends(require("viewer"))])

ONLINE_AFTER_S = 30  # a device is online if it was heard from this recently


async def _db(request: Request, fn, write: bool = False):
    """A bounded read (``db_bounds.read``): a dead or blackholed database is a 503 within
    ``READ_TIMEOUT_S``, never a hung request."""
    return await db_bounds.read(request, fn, write)


def _row(i: Inspection | InspectionRecord) -> dict:
    tax = taxonomy.load()
    return {
        "id": i.id, "board_id": i.board_id, "device_id": i.device_id, "camera_side": i.camera_side,
        "verdict": i.verdict, "verdict_label": tax.verdict(i.verdict).label, "confidence": i.confidence,
        "board_verdict": i.board_verdict, "pairing": i.pairing, "boxes": i.boxes,
        "gpio_pin": i.gpio_pin, "gpio_duration_ms": i.gpio_duration_ms, "has_image": bool(i.image_path),
        "model_version": i.model_version, "latency_ms": i.latency_ms, "anomaly_score": i.anomaly_score,
        "created_at": i.created_at.isoformat() + "Z",
    }


def plant_today() -> date:
    return datetime.now(plant_zone()).date()


def plant_zone() -> ZoneInfo:
    """The plant's time zone (``PLANT_TIMEZONE``): a "day" in statistics is the plant's day."""
    return ZoneInfo(get_settings().plant_timezone)


def _plant_days(start: date | None, end: date | None) -> tuple[date, date]:
    """The plant days asked for; a missing end is the plant's today."""
    today = plant_today()
    return start or today, end or today


def _day_range(start: date | None, end: date | None) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in the plant's zone, as the naive UTC the database stores.
    Any date is accepted: the ends are clamped to what a datetime can hold (9999-12-31 is
    "until the end", not an overflow)."""
    start, end = _plant_days(start, end)
    zone = plant_zone()

    def utc(d: date) -> datetime:
        local = datetime.combine(d, datetime.min.time(), zone)
        return local.astimezone(UTC).replace(tzinfo=None)

    first, last = date(1970, 1, 1), date(9998, 12, 31)  # what every database compares safely
    return utc(min(max(start, first), last)), utc(min(max(end, first), last) + timedelta(days=1))


MAX_OFFSET = 10_000  # deeper than this, page numbers cost the database a scan: use the cursor


def _cursor(row: Inspection) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str):
    """The keyset condition "older than the cursor's row" (created_at desc, id desc)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, iid = raw.partition("|")
        when = datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("cursor is not one this API returned", "invalid_cursor", status=422) from None
    return or_(Inspection.created_at < when, and_(Inspection.created_at == when, Inspection.id < iid))


@router.get("/inspections", response_model=InspectionPage)
async def inspections(
    request: Request,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    verdict: Annotated[str | None, Query(max_length=32, description="a verdict name from the taxonomy "
                                                                  "(GET /v1/taxonomy); others are 422")] = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> dict:
    """Newest first. Two ways to page: ``cursor`` (the previous answer's ``next_cursor``: no
    offset, no count, as deep as the history goes) or the seed's ``page`` numbers (with a
    ``total``, up to an offset of 10,000 rows)."""
    if verdict is not None and verdict not in taxonomy.load().verdict_names:
        raise ApiError(f"verdict {verdict!r} is not in the taxonomy ({', '.join(taxonomy.load().verdict_names)})",
                       "unknown_verdict", status=422)
    if cursor is None and (page - 1) * page_size > MAX_OFFSET:
        raise ApiError(f"page {page} is deeper than {MAX_OFFSET} rows: follow next_cursor instead", "page_too_deep",
                       status=422)
    after = _after(cursor) if cursor else None

    def q(sessions):
        stmt = select(Inspection)
        if verdict:
            stmt = stmt.where(Inspection.verdict == verdict)
        if device_id:
            stmt = stmt.where(Inspection.device_id == device_id)
        if date_from or date_to:
            lo, hi = _day_range(date_from or date.min, date_to or date.max)
            stmt = stmt.where(Inspection.created_at >= lo, Inspection.created_at < hi)
        order = (Inspection.created_at.desc(), Inspection.id.desc())
        with sessions() as s:
            if after is not None:
                rows = s.scalars(stmt.where(after).order_by(*order).limit(page_size)).all()
                total = None
            else:
                total = s.scalar(select(func.count()).select_from(stmt.subquery()))
                rows = s.scalars(stmt.order_by(*order).offset((page - 1) * page_size).limit(page_size)).all()
        return {"items": [_row(r) for r in rows], "page": None if after is not None else page,
                "page_size": page_size, "total": total,
                "next_cursor": _cursor(rows[-1]) if len(rows) == page_size else None}

    return await _db(request, q)


@router.get("/statistics", response_model=Statistics)
async def statistics(request: Request, start_date: date | None = None, end_date: date | None = None) -> dict:
    """Board decisions (the rows that carry the GPIO command) between two dates, with the
    seed's field names: ``<verdict>_count`` for every verdict of the taxonomy, and the same
    counts as ``verdicts`` (name, label, code, count) in code order. The defect rate counts
    every verdict but the ok one (code 0)."""
    start_date, end_date = _plant_days(start_date, end_date)  # echoed as asked: plant days, not UTC ones
    lo, hi = _day_range(start_date, end_date)

    def q(sessions):
        # one pass: per board verdict, the decisions and their latencies (sum and count, so
        # the overall mean is exact however the groups split)
        stmt = (select(Inspection.board_verdict, func.count(), func.sum(Inspection.latency_ms),
                       func.count(Inspection.latency_ms))
                .where(Inspection.gpio_pin.is_not(None), Inspection.created_at >= lo, Inspection.created_at < hi)
                .group_by(Inspection.board_verdict))
        with sessions() as s:
            return s.execute(stmt).all()

    groups = await _db(request, q)
    tax = taxonomy.load()
    by_name = {name: int(n) for name, n, _, _ in groups}
    total = sum(by_name.values())  # a verdict the taxonomy no longer has still counts here
    latency_n = sum(int(n or 0) for _, _, _, n in groups)
    latency = sum(float(x) for _, _, x, _ in groups if x is not None) / latency_n if latency_n else None
    counts: list[dict[str, Any]] = [{"name": v.name, "label": v.label, "code": v.code,
                                     "count": by_name.get(v.name, 0)} for v in tax.verdicts]
    defects = sum(c["count"] for c in counts if c["name"] != tax.ok.name)
    return {"start_date": start_date.isoformat(), "end_date": end_date.isoformat(),
            "total_inspections": total, **{f"{c['name']}_count": c["count"] for c in counts},
            "defect_rate": round(100.0 * defects / total, 2) if total else 0.0,
            "avg_latency_ms": round(latency, 2) if latency is not None else None,
            "verdicts": counts}


@router.get("/inspections/{inspection_id}", response_model=InspectionOut)
async def inspection(request: Request, inspection_id: Annotated[str, Path(max_length=64)]) -> dict:
    """One inspection (the board view reads its boxes); one answered a moment ago is read
    from the outbox while it is on its way to the database."""
    row = await _db(request, lambda sessions: _get(sessions, inspection_id))
    if row is None:
        payload = await asyncio.to_thread(request.app.state.outbox.pending, inspection_id)
        row = _pending_record(payload) if payload else None
    if row is None:
        raise NotFound(f"no inspection {inspection_id}", "inspection_not_found")
    return _row(row)


@router.get("/defect-images/{inspection_id}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def defect_image(request: Request, inspection_id: str,
                       side: Annotated[str | None, Query(pattern="^(left|right)$")] = None,
                       annotated: bool = True,
                       overlay: Annotated[str | None, Query(pattern="^anomaly$",
                                                            description="anomaly: the anomaly heat map on top")] = None
                       ) -> Response:
    row = await _db(request, lambda sessions: _get(sessions, inspection_id))
    if row is None:  # answered a moment ago, still on its way to the database
        payload = await asyncio.to_thread(request.app.state.outbox.pending, inspection_id)
        row = _pending_record(payload) if payload else None
    if row is None or not row.image_path:
        raise NotFound(f"no image for inspection {inspection_id}", "image_not_found")
    side = side or (row.camera_side if row.camera_side in ("left", "right") else "left")
    store = request.app.state.images
    if not store.path(row.image_path, side).exists():
        raise NotFound(f"no {side} image for inspection {inspection_id}", "image_not_found")
    boxes = row.boxes.get(side, []) if isinstance(row.boxes, dict) else (row.boxes or [])
    if overlay and not store.map_path(row.image_path, side).exists():
        raise NotFound(f"no anomaly map for the {side} side of inspection {inspection_id} "
                       "(the anomaly model was not served when it was inspected)", "anomaly_map_not_found")
    if annotated or overlay:
        try:
            data = await asyncio.to_thread(store.annotated, row.image_path, side, boxes if annotated else [], overlay)
        except FileNotFoundError as e:  # pruned between the check and the read
            raise NotFound(f"no image for inspection {inspection_id}", "image_not_found") from e
    else:
        data = await asyncio.to_thread(store.path(row.image_path, side).read_bytes)
    return Response(data, media_type="image/jpeg")


def _pending_record(payload: dict) -> InspectionRecord | None:
    try:
        return InspectionRecord.from_outbox(payload)
    except ValueError:  # not a record the database would take either: no image to show
        return None


def _get(sessions, inspection_id: str) -> Inspection | None:
    with sessions() as s:
        return s.get(Inspection, inspection_id)


def _gpu() -> list[dict] | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML, no GPU: report none
        return None
    out = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem, util = pynvml.nvmlDeviceGetMemoryInfo(h), pynvml.nvmlDeviceGetUtilizationRates(h)
        out.append({"index": i, "utilization_percent": util.gpu, "memory_used_mb": mem.used >> 20,
                    "memory_total_mb": mem.total >> 20})
    return out


STATUS_CHECK_S = 1.5  # each dependency check; they run at once, so the route stays under 2 s


async def _check(coro, default=False):
    try:
        return await asyncio.wait_for(coro, STATUS_CHECK_S)
    except Exception:  # noqa: BLE001 - any failure or timeout means "down" here
        return default


@router.get("/system-status", response_model=SystemStatus)
async def system_status(request: Request) -> dict:
    st = request.app.state

    def db_ok(sessions) -> bool:
        with sessions() as s:
            s.execute(select(1))
        return True

    redis = getattr(st.pairs, "redis", None)
    database, redis_ok, triton_ok, depth = await asyncio.gather(
        _check(asyncio.to_thread(db_ok, getattr(st, "read_sessions", st.sessions))),
        _check(redis.ping()) if redis is not None else asyncio.sleep(0, None),
        _check(st.triton.ready()),
        _check(asyncio.to_thread(st.outbox.depth), None))
    now = time.time()
    devices = [{"device_id": d.id, "side": d.side, "drives_gpio": d.drives_gpio,
                "online": now - st.devices.last_seen.get(d.id, 0) < ONLINE_AFTER_S,
                "last_seen": st.devices.last_seen.get(d.id)} for d in st.devices.all()]
    vm = psutil.virtual_memory()
    return {"server": "ok", "cpu_percent": psutil.cpu_percent(interval=None), "memory_percent": vm.percent,
            "gpu": _gpu(), "database": bool(database), "redis": None if redis is None else bool(redis_ok),
            "triton": bool(triton_ok), "outbox_depth": depth, "devices": devices}


# admin, like PUT /admin/config (README "Security"): plant settings are not for every viewer
@router.get("/config", response_model=dict[str, str], dependencies=[Depends(require("admin"))])
async def get_config(request: Request) -> dict:
    def q(sessions):
        with sessions() as s:
            return {c.key: c.value for c in s.scalars(select(SystemConfig))}

    return await _db(request, q)


@router.get("/system-logs", response_model=SystemLogPage)
async def system_logs(request: Request, page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                      page_size: Annotated[int, Query(ge=1, le=500)] = 50,
                      level: Annotated[str | None, Query(pattern="^(debug|info|warning|error)$")] = None) -> dict:
    def q(sessions):
        stmt = select(SystemLog)
        if level:
            stmt = stmt.where(SystemLog.level == level)
        with sessions() as s:
            total = s.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = s.scalars(stmt.order_by(SystemLog.created_at.desc()).offset((page - 1) * page_size)
                             .limit(page_size)).all()
        return {"items": [{"level": r.level, "source": r.source, "message": r.message, "details": r.details,
                           "created_at": r.created_at.isoformat() + "Z"} for r in rows],
                "page": page, "page_size": page_size, "total": total}

    return await _db(request, q)

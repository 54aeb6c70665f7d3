"""Batch jobs API (the engine is batch): submit a folder, a ZIP or uploads; read
progress (also as Server-Sent Events); cancel a job or an item; retry failed items; download
results as JSON, CSV, a summary or an HTML report."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from batch import results, sources, tuning
from batch.engine import BatchEngine
from batch.priority import Priority
from batch.store import JobNotFound, JobStore
from gateway.api import db_bounds
from gateway.api.schemas.jobs import JobItem, JobProgress, JobResults, JobRetried, JobSummary, Tuning
from gateway.core.errors import ApiError, NotFound, PayloadTooLarge, ServiceUnavailable
from gateway.core.security import require
from gateway.services.idempotency import IdempotencyConflict, fingerprint
from settings.environment import get_settings

router = APIRouter(prefix="/api/v1", tags=["batch"])
VIEW, OPERATE = [Depends(require("viewer"))], [Depends(require("operator"))]  # reads / writes
SOURCE_ERRORS = {"payload_too_large": PayloadTooLarge, "archive_too_large": PayloadTooLarge,
                 "too_many_items": PayloadTooLarge, "storage_unavailable": ServiceUnavailable}


def _engine(request: Request) -> BatchEngine:
    return request.app.state.batch


async def _db(fn, *args):
    """A submission's store call off the event loop (it writes the job's items: bounded per
    statement by the writers' engine, not overall); database trouble is a 503, an unknown id a 404."""
    try:
        return await asyncio.to_thread(fn, *args)
    except JobNotFound as e:
        raise NotFound(f"no job {e.args[0]}", "job_not_found") from None
    except SQLAlchemyError as e:
        raise ServiceUnavailable(f"job database unavailable: {type(e).__name__}", "database_unavailable", 5) from e


async def _read(request: Request, fn, *args, bound=db_bounds.read):
    """``fn(store, *args)`` on the read engine, under the operator reads' bound (a 503 within
    ``READ_TIMEOUT_S``; ``bound=db_bounds.export``: a results download's); an unknown id is a
    404. One call per route, so the bound is the route's."""
    try:
        return await bound(request, lambda sessions: fn(JobStore(sessions), *args))
    except JobNotFound as e:
        raise NotFound(f"no job {e.args[0]}", "job_not_found") from None


async def _write(fn, *args):
    """An operator's change to a job (cancel, retry) on the writers' engine, under the write bound."""
    try:
        return await db_bounds.write(fn, *args)
    except JobNotFound as e:
        raise NotFound(f"no job {e.args[0]}", "job_not_found") from None


@router.post("/jobs", status_code=201, dependencies=OPERATE, response_model=JobProgress,
             responses={200: {"model": JobProgress,
                              "description": "the job an earlier submission under this Idempotency-Key created"}})
async def submit(request: Request,
                 files: Annotated[list[UploadFile] | None, File(description="images and/or ZIPs")] = None,
                 source_dir: Annotated[str | None, Form(description="a folder the workers can read")] = None,
                 priority: Annotated[Literal["urgent", "high", "normal", "low"], Form()] = "normal",
                 kind: Annotated[Literal["inspect", "enhance"], Form()] = "inspect",
                 name: Annotated[str, Form(max_length=255)] = "",
                 chunk_size: Annotated[int | None, Form(ge=1, le=64)] = None,
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None):
    """With an ``Idempotency-Key`` (scoped by submitter), a retried submission (a timeout, a
    lost answer) gets the job the first one created (200) instead of a second job; the same
    key with a different submission is 409 ``idempotency_conflict``."""
    eng, s = _engine(request), get_settings()
    if bool(files) == bool(source_dir):
        raise ApiError("give either files (images or ZIPs) or source_dir", "invalid_request")
    if source_dir is not None and ("\x00" in source_dir or len(source_dir) > 4096):
        raise ApiError("source_dir is not a usable path (NUL byte or too long)", "invalid_source_dir", status=422)
    client_key = fp = None
    if idempotency_key:
        client_key = f"{submitter(request)}:{idempotency_key}"
        fp = await asyncio.to_thread(_submission_fingerprint, files, source_dir, priority, kind, name, chunk_size)
        if (existing := await _existing(eng, client_key, fp)) is not None:
            return existing
    job_id = str(uuid.uuid4())
    staging = eng.job_dir(job_id)  # uploads land where the workers will read them
    try:
        if source_dir:
            root = Path(source_dir)
            if not sources.inside(root, s.batch_allowed_roots.split(":")):
                raise ApiError(f"{source_dir} is not under BATCH_ALLOWED_ROOTS", "source_not_allowed")
            items = await asyncio.to_thread(sources.from_dir, root, True, False, s.batch_max_items)
        else:
            items = await asyncio.to_thread(sources.save_uploads, [(f.filename, f.file) for f in files or []],
                                            staging, s.batch_max_items, s.batch_max_upload_bytes)
        if not items:
            raise ApiError("no image files found", "empty_job")
        created = await _db(_create, eng, items, dict(priority=Priority.parse(priority), kind=kind, job_id=job_id,
                                                      name=name or (source_dir or "upload"), chunk_size=chunk_size,
                                                      client_key=client_key, client_fingerprint=fp))
        if not created:  # the same key won a race a moment ago
            assert client_key is not None and fp is not None  # only a keyed submission can lose one
            shutil.rmtree(staging, ignore_errors=True)
            existing = await _existing(eng, client_key, fp)
            if existing is None:
                raise ServiceUnavailable("the job under this Idempotency-Key vanished; retry", "job_conflict", 1)
            return existing
    except sources.SourceError as e:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written
        raise SOURCE_ERRORS.get(e.code, ApiError)(e.message, e.code) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return await _db(eng.store.progress, job_id)


def submitter(request: Request) -> str:
    """Whose Idempotency-Keys these are: the authenticated principal when there is one."""
    return getattr(request.state, "principal", None) or "anonymous"


def _submission_fingerprint(files: list[UploadFile] | None, source_dir: str | None, *fields) -> str:
    """What makes a submission *this* submission: its fields and every file's name and bytes."""
    parts: list[str | bytes | None] = [source_dir, *(str(f) for f in fields)]
    for f in files or []:
        h = hashlib.sha256()
        f.file.seek(0)
        while chunk := f.file.read(1 << 20):
            h.update(chunk)
        f.file.seek(0)
        parts += [f.filename, h.hexdigest()]
    return fingerprint("jobs", *parts)


async def _existing(eng: BatchEngine, client_key: str, fp: str) -> JSONResponse | None:
    found = await _db(eng.store.find_keyed, client_key)
    if found is None:
        return None
    job_id, stored_fp = found
    if stored_fp is not None and stored_fp != fp:
        raise IdempotencyConflict("this Idempotency-Key was used for another submission (other files, folder or "
                                  "options); nothing was created")
    return JSONResponse(await _db(eng.store.progress, job_id), status_code=200)


def _create(eng: BatchEngine, items: list, kw: dict) -> bool:
    try:
        eng.submit(items, **kw)
        return True
    except IntegrityError:
        return False


@router.get("/jobs", dependencies=VIEW, response_model=list[JobProgress])
async def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict]:
    return await _read(request, lambda store: [store.progress(j.id) for j in store.jobs(limit)])


@router.get("/jobs/{job_id}", dependencies=VIEW, response_model=JobProgress)
async def get_job(job_id: str, request: Request) -> dict:
    return await _read(request, JobStore.progress, job_id)


@router.get("/jobs/{job_id}/items", dependencies=VIEW, response_model=list[JobItem])
async def get_items(job_id: str, request: Request,
                    state: Literal["pending", "processing", "completed", "failed", "cancelled"] | None = None,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,  # past any job (max items), inside SQL's int64
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    def rows(store: JobStore) -> list:
        store.job(job_id)  # an unknown job is a 404, not an empty list
        return store.items(job_id, state, offset, limit)

    return [results.item_dict(it) for it in await _read(request, rows)]


@router.get("/jobs/{job_id}/events", dependencies=VIEW, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: progress, done"}})
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Progress as Server-Sent Events (``event: progress``), one when it changes, until the
    job ends (``event: done``)."""
    await _read(request, JobStore.job, job_id)

    async def stream():
        last = None
        while not await request.is_disconnected():
            try:
                p = await _read(request, JobStore.progress, job_id)
            except ServiceUnavailable:
                yield "event: error\ndata: {\"code\": \"database_unavailable\"}\n\n"
                await asyncio.sleep(2)
                continue
            key = (p["state"], tuple(p["counts"].values()))
            if key != last:
                last = key
                yield f"event: progress\ndata: {json.dumps(p)}\n\n"
            if p["state"] != "running":
                yield f"event: done\ndata: {json.dumps(p)}\n\n"
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/jobs/{job_id}/cancel", dependencies=OPERATE, response_model=JobProgress)
async def cancel_job(job_id: str, request: Request) -> dict:
    eng = _engine(request)
    await _write(eng.cancel, job_id)
    return await _read(request, JobStore.progress, job_id)


@router.post("/jobs/{job_id}/items/{item_id}/cancel", dependencies=OPERATE, response_model=JobProgress)
async def cancel_item(job_id: str, item_id: int, request: Request) -> dict:
    if not await _write(_engine(request).store.cancel_item, job_id, item_id):
        raise ApiError("only a pending item of this job can be cancelled", "item_not_pending")
    return await _read(request, JobStore.progress, job_id)


@router.post("/jobs/{job_id}/retry", dependencies=OPERATE, response_model=JobRetried)
async def retry_failed(job_id: str, request: Request) -> dict:
    eng = _engine(request)
    n = await _write(eng.retry, job_id)
    return {"retried": n, **await _read(request, JobStore.progress, job_id)}


@router.get("/jobs/{job_id}/results", dependencies=VIEW, response_model=JobResults | JobSummary,
            responses={200: {"description": "format=json: the whole job (an attachment); summary: the summary; "
                                            "csv: one row per item; report: an HTML page",
                             "content": {"text/csv": {}, "text/html": {}}}})
async def job_results(job_id: str, request: Request,
                      format: Literal["json", "csv", "summary", "report"] = "json"):  # noqa: A002
    progress, items = await _read(request, lambda store: (store.progress(job_id), store.items(job_id)),
                                  bound=db_bounds.export)
    stem = f"job-{job_id[:8]}"
    if format == "csv":
        return PlainTextResponse(results.to_csv(items), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'})
    if format == "summary":
        return results.summary(progress, items)
    if format == "report":
        return HTMLResponse(results.report_html(progress, results.summary(progress, items)))
    return PlainTextResponse(results.to_json(progress, items), media_type="application/json",
                             headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})


@router.get("/tuning", dependencies=VIEW, response_model=Tuning)
async def get_tuning(request: Request) -> dict:
    """The auto-tuner's recorded pick (``python -m batch tune`` measures it)."""
    settings = _engine(request).settings
    b, c = await _read(request, lambda store: tuning.current(store.sessions, settings))
    return {"batch_size": b, "concurrency": c}

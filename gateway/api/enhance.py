"""Photo enhancement API (seed 002): one photo or a batch of up to 20, task and batch status,
a progress stream (SSE), downloads (one file or a ZIP), cancel, performance, and the page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse

from enhance.options import OptionError, check_output_size, parse_options
from gateway.api.auth import page_caller
from gateway.api.schemas.enhance import (
    BatchCancelled,
    EnhanceAccepted,
    EnhanceBatchAccepted,
    EnhanceBatchStatus,
    EnhancePerformance,
    EnhanceTask,
    TaskCancelled,
)
from gateway.api.uploads import probe_image
from gateway.core.errors import ApiError, Conflict, PayloadTooLarge
from gateway.core.security import require
from gateway.services.enhance import EnhanceService
from settings.environment import get_settings

router = APIRouter(tags=["enhance"])
OPERATE = [Depends(require("operator"))]
PAGE = Path(__file__).resolve().parent.parent / "web" / "enhance.html"


def _service(request: Request) -> EnhanceService:
    return request.app.state.enhance


class InvalidOptions(ApiError):
    status = 422
    code = "invalid_options"


class TooManyFiles(ApiError):
    status = 400
    code = "too_many_files"


def _options(quality: str | None, upscale: int | None, background: bool | None, tile_size: int | None,
             weight: float | None) -> dict:
    raw = {"quality": quality or "high", "upscale": upscale, "background": background, "tile": tile_size,
           "weight": weight}
    try:
        opts = parse_options({k: v for k, v in raw.items() if v is not None})
    except OptionError as e:
        raise InvalidOptions(str(e)) from None
    return json.loads(opts.to_json())


async def _check(files: list[UploadFile], fields: list[str], opts: dict) -> None:
    """Every photo checked where the parser spooled it, before anything is written: type,
    size, header, and the size of its result (input x upscale squared)."""
    s = get_settings()
    total = 0
    for f, field in zip(files, fields):
        size, (w, h) = await probe_image(f, s.max_upload_bytes, s.enhance_max_pixels, field)
        total += size
        if total > s.enhance_max_batch_bytes:
            raise PayloadTooLarge(f"the batch is over {s.enhance_max_batch_bytes} bytes")
        try:
            check_output_size(w, h, opts["upscale"])
        except OptionError as e:
            raise InvalidOptions(f"{field}: {e}", e.code) from None


Quality = Annotated[str | None, Form(description="fast | medium | high (default high)")]
Upscale = Annotated[int | None, Form(description="1, 2 (default) or 4")]
Background = Annotated[bool | None, Form(description="RealESRGAN background upsampling (preset decides)")]
TileSize = Annotated[int | None, Form(description="background tile size, 256-512")]
Weight = Annotated[float | None, Form(description="restored vs original face blend, 0-1 (default 0.5)")]


@router.post("/api/v1/enhance", status_code=202, dependencies=OPERATE, response_model=EnhanceAccepted)
async def enhance_one(request: Request, file: Annotated[UploadFile, File(description="a JPEG or PNG photo")],
                      quality: Quality = None, upscale: Upscale = None, background: Background = None,
                      tile_size: TileSize = None, weight: Weight = None) -> dict:
    opts = _options(quality, upscale, background, tile_size, weight)
    await _check([file], ["file"], opts)
    batch, (task,) = await _service(request).submit([(file.filename, file.file)], opts)
    return {"task_id": task.id, "batch_id": batch.id, "state": task.state,
            "status_url": f"/api/v1/tasks/{task.id}", "download_url": f"/api/v1/download/{task.id}"}


@router.post("/api/v1/enhance/batch", status_code=202, dependencies=OPERATE,
             response_model=EnhanceBatchAccepted)
async def enhance_batch(request: Request, files: Annotated[list[UploadFile], File(description="up to 20 photos")],
                        quality: Quality = None, upscale: Upscale = None, background: Background = None,
                        tile_size: TileSize = None, weight: Weight = None) -> dict:
    s = get_settings()
    if len(files) > s.enhance_max_files:
        raise TooManyFiles(f"{len(files)} files; at most {s.enhance_max_files} per batch")
    opts = _options(quality, upscale, background, tile_size, weight)
    await _check(files, [f"files[{i}] ({f.filename})" for i, f in enumerate(files)], opts)
    batch, tasks = await _service(request).submit([(f.filename, f.file) for f in files], opts)
    return {"batch_id": batch.id, "total": len(tasks), "state": "queued", "options": opts,
            "tasks": [{"task_id": t.id, "index": t.index, "filename": t.filename} for t in tasks],
            "status_url": f"/api/v1/batch/{batch.id}", "events_url": f"/api/v1/batch/{batch.id}/events",
            "download_url": f"/api/v1/batch/{batch.id}/download"}


@router.get("/api/v1/tasks/{task_id}", dependencies=OPERATE, response_model=EnhanceTask,
            response_model_exclude_unset=True)
async def task_status(request: Request, task_id: str) -> dict:
    return _service(request).task(task_id).public()


@router.post("/api/v1/tasks/{task_id}/cancel", dependencies=OPERATE, response_model=TaskCancelled)
async def cancel_task(request: Request, task_id: str) -> dict:
    svc = _service(request)
    t = svc.task(task_id)
    n = svc.cancel([t])
    return {"task_id": t.id, "cancelled": n, "state": t.state}


@router.get("/api/v1/download/{task_id}", dependencies=OPERATE, response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}},
                             "description": "the enhanced photo (as its upload: JPEG or PNG)"}})
async def download(request: Request, task_id: str) -> FileResponse:
    svc = _service(request)
    t = svc.task(task_id)
    if t.state != "completed" or not t.result_path or not t.result_path.exists():
        raise Conflict(f"task {task_id} is {t.state}; nothing to download", "not_ready")
    media = "image/png" if t.result_path.suffix == ".png" else "image/jpeg"
    return FileResponse(t.result_path, media_type=media, filename=svc.download_name(t))


@router.get("/api/v1/batch/{batch_id}", dependencies=OPERATE, response_model=EnhanceBatchStatus,
            response_model_exclude_unset=True)
async def batch_status(request: Request, batch_id: str) -> dict:
    svc = _service(request)
    return svc.store.batch_status(svc.batch(batch_id))


@router.post("/api/v1/batch/{batch_id}/cancel", dependencies=OPERATE, response_model=BatchCancelled)
async def cancel_batch(request: Request, batch_id: str) -> dict:
    svc = _service(request)
    batch = svc.batch(batch_id)
    n = svc.cancel(svc.store.batch_tasks(batch))
    return {"batch_id": batch_id, "cancelled": n}


@router.get("/api/v1/batch/{batch_id}/download", dependencies=OPERATE, response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}},
                             "description": "the completed results and manifest.json, as a ZIP"}})
async def download_batch(request: Request, batch_id: str) -> StreamingResponse:
    """The ZIP is written as it is sent (no copy on disk, a few chunks in memory), from a
    worker thread: the results are read from disk there, never on the event loop."""
    svc = _service(request)
    batch = svc.batch(batch_id)
    if not svc.finished(batch):
        raise Conflict(f"batch {batch_id} is still running; download it when every item has finished",
                       "not_ready")
    name = f"enhanced_{batch_id[:8]}.zip"
    return StreamingResponse(await svc.zip_stream(batch), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/api/v1/batch/{batch_id}/events", dependencies=OPERATE, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: item, batch, done"}})
async def batch_events(request: Request, batch_id: str) -> StreamingResponse:
    """``item`` events as each photo changes state (with its download URL once done), a
    ``batch`` summary with each, and ``done`` when every item has finished."""
    svc = _service(request)
    batch = svc.batch(batch_id)
    queue = svc.store.subscribe(batch_id)

    async def stream():
        try:
            yield "retry: 2000\n\n"
            for item in svc.store.batch_status(batch)["items"]:  # the state so far
                yield f"event: item\ndata: {json.dumps(item)}\n\n"
            while not svc.finished(batch) and not await request.is_disconnected():
                try:
                    item = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                summary = {k: v for k, v in svc.store.batch_status(batch).items() if k != "items"}
                yield f"event: item\ndata: {json.dumps(item)}\n\n"
                yield f"event: batch\ndata: {json.dumps(summary)}\n\n"
            while not queue.empty():  # the last changes before the end
                yield f"event: item\ndata: {json.dumps(queue.get_nowait())}\n\n"
            summary = {k: v for k, v in svc.store.batch_status(batch).items() if k != "items"}
            yield f"event: done\ndata: {json.dumps(summary)}\n\n"
        finally:
            svc.store.unsubscribe(batch_id, queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/api/v1/performance", dependencies=OPERATE, response_model=EnhancePerformance)
async def performance(request: Request) -> dict:
    return await asyncio.to_thread(_service(request).performance)


@router.get("/enhance", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> Response:
    caller = page_caller(request, "operator")
    if isinstance(caller, Response):
        return caller  # to the login page
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))

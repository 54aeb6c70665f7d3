"""The dashboard page and its live event stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from gateway.api.auth import page_caller
from gateway.core.security import require

router = APIRouter(tags=["dashboard"])
PAGE = Path(__file__).resolve().parent.parent / "web" / "dashboard.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request) -> Response:
    caller = page_caller(request, "viewer")
    if isinstance(caller, Response):
        return caller  # to the login page
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/api/live", include_in_schema=False, dependencies=[Depends(require("viewer"))],
            response_class=StreamingResponse)
async def live(request: Request) -> StreamingResponse:
    feed = request.app.state.live
    queue = feed.subscribe()

    async def stream():
        try:
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), 15)
                    yield f"event: inspection\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
                except TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            feed.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

"""The FastAPI application: one shared Triton client, JSON errors everywhere."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api import inspect
from gateway.core.config import get_settings
from gateway.core.errors import ApiError
from gateway.services.triton import TritonService

log = logging.getLogger("gateway")


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    app.state.triton = TritonService(settings.triton_url, settings.triton_timeout_s)
    try:
        yield
    finally:
        await app.state.triton.close()


def create_app() -> FastAPI:
    app = FastAPI(title="PCB inspection gateway", version="0.1.0", lifespan=lifespan)
    app.include_router(inspect.router)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"code": e.code, "message": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in err.get("loc", ())[1:]) or "body" for err in e.errors()]
        return JSONResponse({"code": "invalid_request", "message": f"invalid or missing fields: {', '.join(fields)}",
                             "fields": fields}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"code": code, "message": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"code": "internal_error", "message": "internal error; see the gateway log"},
                            status_code=500)

    @app.get("/health", tags=["seed"])
    async def health(request: Request) -> dict:
        triton_ok = await request.app.state.triton.ready()
        return {"status": "healthy" if triton_ok else "degraded", "triton": triton_ok}

    return app


app = create_app()

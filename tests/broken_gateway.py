"""The real gateway app with one extra route that raises, for the catch-all test against a
real uvicorn process (``uvicorn tests.broken_gateway:create --factory``): a bug no input
reaches must still answer JSON and leave the keep-alive connection open."""

from __future__ import annotations

from fastapi import FastAPI

BROKEN_PATH = "/test/broken"
BUG = "a bug no hostile input reaches"


def create() -> FastAPI:
    from gateway.main import create_app

    app = create_app()

    async def broken() -> None:
        raise RuntimeError(BUG)

    app.add_api_route(BROKEN_PATH, broken, methods=["GET"], include_in_schema=False)
    return app

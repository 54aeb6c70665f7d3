"""The one way the gateway runs a long-lived task next to the requests (outbox drainer,
housekeeping, live relay): started in the lifespan, cancelled and awaited on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine


class BackgroundTask:
    _task: asyncio.Task | None = None

    def _start(self, coro: Coroutine, name: str) -> None:
        self._task = asyncio.create_task(coro, name=name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

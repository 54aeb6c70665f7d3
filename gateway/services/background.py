"""The one way the gateway runs long-lived work next to the requests (outbox drainer,
housekeeping, live relay): started in the lifespan, cancelled and awaited on shutdown, and
never allowed to die silently.

- ``run_chore``: one run of one chore, isolated: an error is logged, counted
  (``gateway_chore_errors_total``) and the caller's loop goes on; a clean run stamps
  ``gateway_chore_last_success_timestamp_seconds``, so a chore that stops (or keeps
  failing) is an alert.
- ``BackgroundTask``: supervises its loop: if the loop itself ends with an exception (a
  bug), it is logged, counted and restarted after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.core.metrics import CHORE_ERRORS, CHORE_LAST_SUCCESS

log = logging.getLogger("gateway.background")


def chore_ok(name: str) -> None:
    CHORE_LAST_SUCCESS.labels(name).set(time.time())


def chore_failed(name: str, e: BaseException) -> None:
    CHORE_ERRORS.labels(name).inc()
    log.warning("background chore %s failed: %r", name, e)


async def run_chore(name: str, fn: Callable[[], Any], *, in_thread: bool = True) -> bool:
    """Run ``fn`` once (in a worker thread: chores touch files and databases); True if it
    ran cleanly."""
    try:
        if in_thread:
            await asyncio.to_thread(fn)
        else:
            await fn()
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - isolated: logged, counted, the loop goes on
        chore_failed(name, e)
        return False
    chore_ok(name)
    return True


class BackgroundTask:
    _task: asyncio.Task | None = None
    restart_after_s = 1.0

    def _start(self, coro: Coroutine | Callable[[], Coroutine], name: str) -> None:
        factory = coro if callable(coro) else None
        self._task = asyncio.create_task(self._supervise(factory, coro, name), name=name)

    async def _supervise(self, factory: Callable[[], Coroutine] | None, first: Any, name: str) -> None:
        coro = first if factory is None else factory()
        while True:
            try:
                await coro
                return  # a loop that ends on its own has finished its job
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in the loop: count it, start it again
                chore_failed(name, e)
                log.exception("background task %s died; restarting in %.0f s", name, self.restart_after_s)
            if factory is None:  # a bare coroutine cannot be restarted
                return
            await asyncio.sleep(self.restart_after_s)
            coro = factory()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

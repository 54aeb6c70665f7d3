"""Background task: moves outbox rows to the database, backing off while it is down."""

from __future__ import annotations

import asyncio
import logging

from gateway.core.metrics import DB_WRITE_FAILURES
from gateway.services.background import BackgroundTask
from gateway.services.db_writer import DbWriter
from gateway.services.outbox import Outbox

log = logging.getLogger("gateway.drainer")


class Drainer(BackgroundTask):
    def __init__(self, outbox: Outbox, writer: DbWriter, idle_s: float = 0.2, max_backoff_s: float = 5.0,
                 events=None):
        self.outbox, self.writer, self.events = outbox, writer, events
        self.idle_s, self.max_backoff_s = idle_s, max_backoff_s
        self.failures = 0  # consecutive; exported as a metric
        self.written = 0
        self.db_ok = True
        self._wake = asyncio.Event()

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = self.idle_s
        while True:
            try:
                moved = await asyncio.to_thread(self.outbox.drain_once, self.writer, 200)
                self.written += moved
                if self.failures and self.events is not None:
                    await asyncio.to_thread(self.events, "info", "database",
                                            f"database writes resumed after {self.failures} failed attempts",
                                            {"backlog": self.outbox.depth() + moved})
                self.failures, self.db_ok, backoff = 0, True, self.idle_s
                if moved:
                    continue  # more may be waiting
            except Exception as e:  # noqa: BLE001 - any DB failure: keep rows, retry later
                self.failures += 1
                self.db_ok = False
                DB_WRITE_FAILURES.inc()
                backoff = min(self.max_backoff_s, max(self.idle_s, backoff * 2))
                if self.failures == 1 and self.events is not None:
                    await asyncio.to_thread(self.events, "error", "database",
                                            f"database writes failing, rows stay in the outbox: {e!r}"[:500])
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("database write failed (%d in a row), rows stay in the outbox: %r",
                                self.failures, e)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._start(self.run(), "outbox-drainer")

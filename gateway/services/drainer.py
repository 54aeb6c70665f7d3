"""Background task: moves outbox rows to the database, backing off while it is down.

Two kinds of failure, told apart by ``DbWriter.rejects``: the database is unavailable
(rows wait, ``gateway_db_write_failures_total``, one "database writes failing" event per
outage) or it refuses a row (counted in ``gateway_outbox_rejected_total``; after
``max_attempts`` the row is quarantined, an error event and ``gateway_outbox_quarantined``
tell the operator). Several drainers on one outbox file lease their rows, so their writes
never race (``Outbox.drain_once``)."""

from __future__ import annotations

import asyncio
import logging

from gateway.core.metrics import DB_WRITE_FAILURES, OUTBOX_QUARANTINED, OUTBOX_REJECTED
from gateway.services.background import BackgroundTask, chore_failed, chore_ok
from gateway.services.db_writer import DbWriter
from gateway.services.outbox import Outbox, PendingRow

log = logging.getLogger("gateway.drainer")
CHORE = "outbox_drain"


class Drainer(BackgroundTask):
    def __init__(self, outbox: Outbox, writer: DbWriter, idle_s: float = 0.5, max_backoff_s: float = 5.0,
                 events=None, max_attempts: int = 5, batch: int = 200):
        self.outbox, self.writer, self.events = outbox, writer, events
        # idle_s: between drains while the outbox is not full enough for a whole batch. The
        # rows are already safe on disk; draining every few requests would spend the GIL the
        # line's requests need on ORM work for one row at a time (make bench-profile)
        self.idle_s, self.max_backoff_s, self.max_attempts = idle_s, max_backoff_s, max_attempts
        self.batch = batch
        self.failures = 0  # consecutive outage failures; exported as a metric
        self.written = 0
        self.db_ok = True
        self._wake = asyncio.Event()
        self._quarantined: list[tuple[PendingRow, Exception]] = []

    def poke(self) -> None:
        self._wake.set()

    def _rejected(self, e: Exception) -> bool:
        refused = self.writer.rejects(e)
        if refused:
            OUTBOX_REJECTED.inc()
        return refused

    def _drain(self) -> int:
        return self.outbox.drain_once(self.writer, self.batch, rejected=self._rejected, max_attempts=self.max_attempts,
                                      on_quarantine=lambda row, e: self._quarantined.append((row, e)))

    async def _event(self, level: str, message: str, details: dict | None = None) -> None:
        if self.events is None:
            return
        try:  # an event that cannot be written must not stop the drainer
            await asyncio.to_thread(self.events, level, "database", message[:500], details)
        except Exception as e:  # noqa: BLE001
            log.warning("event not recorded: %r", e)

    async def once(self) -> tuple[int, bool]:
        """One drain step: (rows moved, the database was available). Sets
        ``gateway_outbox_quarantined`` from the file afterwards, so the gauge is true after
        every step (an operator's retry empties the quarantine too)."""
        moved, ok = await self._step()
        OUTBOX_QUARANTINED.set(await asyncio.to_thread(self.outbox.quarantine_depth))
        return moved, ok

    async def _step(self) -> tuple[int, bool]:
        try:
            moved = await asyncio.to_thread(self._drain)
        except Exception as e:  # noqa: BLE001 - the database is unavailable: keep rows, retry later
            self.failures += 1
            self.db_ok = False
            DB_WRITE_FAILURES.inc()
            if self.failures == 1:
                await self._event("error", f"database writes failing, rows stay in the outbox: {e!r}")
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("database write failed (%d in a row), rows stay in the outbox: %r", self.failures, e)
            return 0, False
        if self.failures:
            await self._event("info", f"database writes resumed after {self.failures} failed attempts")
        self.failures, self.db_ok = 0, True
        self.written += moved
        while self._quarantined:
            row, why = self._quarantined.pop()
            log.error("outbox row %s (%s) refused %d times, quarantined: %r", row.id, row.kind, self.max_attempts, why)
            await self._event("error", f"outbox row {row.id} ({row.kind}) quarantined after {self.max_attempts} "
                                       f"refusals: {why!r}", {"row_id": row.id, "kind": row.kind})
        return moved, True

    async def run(self) -> None:
        backoff = self.idle_s
        while True:
            try:
                moved, ok = await self.once()
            except Exception as e:  # noqa: BLE001 - the outbox file itself failed: count, go on
                chore_failed(CHORE, e)
                moved, ok = 0, False
            else:
                if ok:
                    chore_ok(CHORE)
                else:
                    chore_failed(CHORE, RuntimeError("database unavailable"))
            backoff = self.idle_s if ok else min(self.max_backoff_s, max(self.idle_s, backoff * 2))
            if moved >= self.batch:
                continue  # a full batch: more are waiting
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._start(self.run, "outbox-drainer")

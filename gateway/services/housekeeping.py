"""Periodic chores of each worker: reload the device registry (devices added through
another worker), flush heartbeats to the database, prune old images and idempotency keys."""

from __future__ import annotations

import asyncio
import logging

from gateway.services.background import BackgroundTask

log = logging.getLogger("gateway.housekeeping")


class Housekeeping(BackgroundTask):
    def __init__(self, devices, images, outbox, every_s: float = 5.0, idempotency_ttl_s: float = 86400):
        self.devices, self.images, self.outbox = devices, images, outbox
        self.every_s, self.idempotency_ttl_s = every_s, idempotency_ttl_s
        self.rounds = 0

    async def once(self) -> None:
        for name, fn in (("device registry", self.devices.refresh), ("heartbeats", self.devices.flush_last_seen)):
            try:
                await asyncio.to_thread(fn)
            except Exception as e:  # noqa: BLE001 - database away: try again next round
                log.debug("%s: %r", name, e)
        if self.rounds % 60 == 0:  # about every 5 minutes
            await asyncio.to_thread(self.images.prune)
            await asyncio.to_thread(self.outbox.prune_idempotency, self.idempotency_ttl_s)
        self.rounds += 1

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._start(self.run(), "housekeeping")

"""Periodic chores of each worker: reload the device registry (devices added through
another worker), flush heartbeats to the database, prune old images and idempotency keys.
Each chore is isolated (``run_chore``): one that fails is logged and counted and the others
go on, this round and the next."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.services.background import BackgroundTask, run_chore

log = logging.getLogger("gateway.housekeeping")


class Housekeeping(BackgroundTask):
    def __init__(self, devices, images, outbox, every_s: float = 5.0, idempotency_ttl_s: float = 86400,
                 prune_every: int = 60, principals=None):
        self.devices, self.images, self.outbox = devices, images, outbox
        self.principals = principals  # keys revoked through another worker or the CLI end here within a round
        self.every_s, self.idempotency_ttl_s = every_s, idempotency_ttl_s
        self.prune_every = prune_every  # rounds: about every 5 minutes
        self.rounds = 0

    def chores(self) -> list[tuple[str, Callable[[], object]]]:
        due = [("device_registry", self.devices.refresh), ("heartbeats", self.devices.flush_last_seen)]
        if self.principals is not None:
            due.append(("principals", self.principals.refresh))
        if self.rounds % self.prune_every == 0:
            due += [("image_prune", self.images.prune),
                    ("idempotency_prune", lambda: self.outbox.prune_idempotency(self.idempotency_ttl_s))]
        return due

    async def once(self) -> dict[str, bool]:
        results = {name: await run_chore(name, fn) for name, fn in self.chores()}
        self.rounds += 1
        return results

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._start(self.run, "housekeeping")

"""Live updates for the dashboard: every answered inspection is published as a small JSON
event. Each connected browser has a bounded queue (a slow tab drops old events, it never
slows the line). With ``REDIS_URL`` set, events go through the Redis channel ``pcb:live``
so a dashboard connected to any worker sees the inspections of all workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from gateway.services.background import BackgroundTask

log = logging.getLogger("gateway.live")
CHANNEL = "pcb:live"


class LiveFeed(BackgroundTask):
    def __init__(self, redis=None, queue_size: int = 200):
        self.redis = redis
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def _fan_out(self, event: dict) -> None:
        for q in list(self._subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # drop the oldest for this slow client
            q.put_nowait(event)

    async def publish(self, event: dict) -> None:
        if self.redis is not None:
            try:
                await self.redis.publish(CHANNEL, json.dumps(event))
                return
            except Exception as e:  # noqa: BLE001 - Redis down: local clients still get it
                log.debug("live publish through Redis failed: %r", e)
        self._fan_out(event)

    async def _relay(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                while True:
                    # an explicit read timeout: the shared client's short socket timeout is
                    # for commands, a quiet channel is not an error
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._fan_out(json.loads(msg["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect after a Redis outage
                log.debug("live relay lost Redis: %r", e)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def start(self) -> None:
        if self.redis is not None:
            self._start(self._relay, "live-relay")

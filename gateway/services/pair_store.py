"""Pairing of the two sides of one board, posted separately by Pi 1 (left) and Pi 2 (right).

Each side's result is put under the board id; whoever needs the other side waits for it
up to the pairing window. Two implementations behind one interface:

- ``MemoryPairStore``: in-process (the embedded default, one gateway worker);
- ``RedisPairStore``: shared by every gateway worker and machine. A side is written with
  HSET on ``pair:{board}`` (with a TTL), then announced on the channel ``pair:{board}``; a
  waiter subscribes *before* it reads the hash, so an arrival between the two is never
  missed.

``claim_once`` is the guard against two GPIO pulses for one board: an atomic set-if-absent
(SET NX in Redis) that only the first caller wins, whatever worker it runs on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Protocol

OTHER = {"left": "right", "right": "left"}


class PairStore(Protocol):
    async def put(self, board_id: str, side: str, result: dict) -> None: ...
    async def get(self, board_id: str, side: str) -> dict | None: ...
    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None: ...
    async def claim_once(self, key: str, ttl_s: int = 3600) -> bool: ...
    async def close(self) -> None: ...


class MemoryPairStore:
    # long enough for a late side to find its board's decision, short enough that a line
    # at 10 boards/s keeps only a few thousand small entries
    def __init__(self, ttl_s: float = 300):
        self.ttl_s = ttl_s
        self._sides: dict[str, dict[str, dict]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._claims: dict[str, float] = {}
        self._born: dict[str, float] = {}

    def _evict(self) -> None:
        now = time.monotonic()
        for b in [b for b, t in self._born.items() if now - t > self.ttl_s]:
            self._sides.pop(b, None)
            self._events.pop(b, None)
            self._born.pop(b, None)
        for k in [k for k, t in self._claims.items() if now > t]:
            self._claims.pop(k, None)

    async def put(self, board_id: str, side: str, result: dict) -> None:
        self._evict()
        self._sides.setdefault(board_id, {})[side] = result
        self._born.setdefault(board_id, time.monotonic())
        ev = self._events.pop(board_id, None)
        if ev:
            ev.set()

    async def get(self, board_id: str, side: str) -> dict | None:
        return self._sides.get(board_id, {}).get(side)

    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.get(board_id, side)
            left = deadline - time.monotonic()
            if found is not None or left <= 0:
                return found
            ev = self._events.setdefault(board_id, asyncio.Event())
            try:
                await asyncio.wait_for(ev.wait(), left)
            except TimeoutError:
                return await self.get(board_id, side)

    async def claim_once(self, key: str, ttl_s: int = 3600) -> bool:
        self._evict()
        if key in self._claims:
            return False
        self._claims[key] = time.monotonic() + ttl_s
        return True

    async def close(self) -> None:
        return None


class RedisPairStore:
    def __init__(self, url: str, prefix: str = "pcb:", ttl_s: int = 600):
        import redis.asyncio as aioredis

        # short timeouts: a dead Redis must cost a pairing window, not a hung request
        self.redis = aioredis.from_url(url, decode_responses=True, socket_connect_timeout=1,
                                       socket_timeout=2)
        self.prefix, self.ttl_s = prefix, ttl_s

    def _key(self, board_id: str) -> str:
        return f"{self.prefix}pair:{board_id}"

    async def put(self, board_id: str, side: str, result: dict) -> None:
        key = self._key(board_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, side, json.dumps(result))
            p.expire(key, self.ttl_s)
            p.publish(key, side)
            await p.execute()

    async def get(self, board_id: str, side: str) -> dict | None:
        raw = await self.redis.hget(self._key(board_id), side)
        return json.loads(raw) if raw else None

    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None:
        key = self._key(board_id)
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(key)
        try:
            found = await self.get(board_id, side)  # after subscribing: no lost wake-up
            deadline = time.monotonic() + timeout_s
            while found is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 0.5))
                if msg is not None and msg.get("data") == side:
                    found = await self.get(board_id, side)
            return found
        finally:
            await pubsub.unsubscribe(key)
            await pubsub.aclose()

    async def claim_once(self, key: str, ttl_s: int = 3600) -> bool:
        return bool(await self.redis.set(f"{self.prefix}claim:{key}", "1", nx=True, ex=ttl_s))

    async def close(self) -> None:
        await self.redis.aclose()


class FallbackPairStore:
    """Redis first; while Redis is unreachable, this worker's own memory. The line keeps
    moving through a Redis outage: sides that reach the same worker still pair, the others
    are answered ``partial`` after the window (never a hang, never an error to the edge).
    ``degraded`` says which mode the last call ran in (exported in /api/system-status)."""

    def __init__(self, primary: RedisPairStore, retry_after_s: float = 5.0):
        self.primary, self.local = primary, MemoryPairStore()
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self.redis = primary.redis

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    async def _call(self, name: str, *args, **kwargs):
        if not self.degraded:
            try:
                return await getattr(self.primary, name)(*args, **kwargs)
            except (OSError, ConnectionError, TimeoutError) as e:
                self._mark_down(e)
            except Exception as e:  # redis.exceptions.ConnectionError/TimeoutError and kin
                if type(e).__module__.startswith("redis"):
                    self._mark_down(e)
                else:
                    raise
        return await getattr(self.local, name)(*args, **kwargs)

    def _mark_down(self, e: Exception) -> None:
        import logging

        if not self.degraded:
            logging.getLogger("gateway.pairing").warning("Redis unreachable (%r): pairing in-process for now", e)
        self._down_until = time.monotonic() + self.retry_after_s

    async def put(self, board_id: str, side: str, result: dict) -> None:
        await self._call("put", board_id, side, result)

    async def get(self, board_id: str, side: str) -> dict | None:
        return await self._call("get", board_id, side)

    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None:
        return await self._call("wait_for", board_id, side, timeout_s)

    async def claim_once(self, key: str, ttl_s: int = 3600) -> bool:
        return await self._call("claim_once", key, ttl_s)

    async def close(self) -> None:
        await self.primary.close()

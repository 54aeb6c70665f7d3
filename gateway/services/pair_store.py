"""Pairing state of the two sides of one board, posted separately by Pi 1 (left) and Pi 2
(right), and the board's one decision (``pcb.pairing``).

Each side's result is put under the board id; the driving side waits for the other up to
the pairing window, then *decides* atomically: the decision is written once, against the
sides present at that instant, and every later caller (a retry, another replica, a late
side) reads that decision. Two implementations behind one interface:

- ``MemoryPairStore``: in-process (the embedded default, one gateway worker);
- ``RedisPairStore``: shared by every gateway worker and machine. A side is written with
  HSET on ``pair:{board}`` (with a TTL), then announced on the channel ``pair:{board}``; a
  waiter subscribes *before* it reads the hash, so an arrival between the two is never
  missed. The decision is an optimistic transaction (WATCH the board's hash, read it,
  decide, MULTI/EXEC), so two deciders never both win.

``FallbackPairStore`` puts the two together: Redis while it answers, this process's memory
while it does not, and back to Redis as soon as a probe gets a PONG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

from pcb.pairing import OTHER  # noqa: F401 - re-exported for the callers of this module

log = logging.getLogger("gateway.pairing")

# make(sides) -> decision: called inside the store's atomic section with the board's sides
# as stored at that instant, only when the board has no decision yet
MakeDecision = Callable[[dict[str, dict]], dict]

# long enough for a retry or a late side to find its board's decision (an hour of a line at
# 10 boards/s is ~36,000 small hashes)
DEFAULT_TTL_S = 3600


class PairStore(Protocol):
    async def put(self, board_id: str, side: str, result: dict) -> None: ...
    async def get(self, board_id: str, side: str) -> dict | None: ...
    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None: ...
    async def decide(self, board_id: str, make: MakeDecision) -> dict: ...
    async def decision(self, board_id: str) -> dict | None: ...
    async def close(self) -> None: ...


class MemoryPairStore:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S):
        self.ttl_s = ttl_s
        self._boards: dict[str, dict[str, dict]] = {}  # board -> {"left"|"right"|"decision": ...}
        self._events: dict[str, asyncio.Event] = {}
        self._born: dict[str, float] = {}
        self._next_evict = 0.0

    def _evict(self) -> None:
        now = time.monotonic()
        if now < self._next_evict:
            return
        self._next_evict = now + 1.0
        for b in [b for b, t in self._born.items() if now - t > self.ttl_s]:
            self._boards.pop(b, None)
            self._events.pop(b, None)
            self._born.pop(b, None)

    def _board(self, board_id: str) -> dict[str, dict]:
        self._evict()
        self._born.setdefault(board_id, time.monotonic())
        return self._boards.setdefault(board_id, {})

    async def put(self, board_id: str, side: str, result: dict) -> None:
        self._board(board_id)[side] = result
        ev = self._events.pop(board_id, None)
        if ev:
            ev.set()

    async def get(self, board_id: str, side: str) -> dict | None:
        return self._boards.get(board_id, {}).get(side)

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

    async def decide(self, board_id: str, make: MakeDecision) -> dict:
        board = self._board(board_id)  # no await below: atomic on the event loop
        if "decision" not in board:
            board["decision"] = make({k: v for k, v in board.items() if k in OTHER})
        return board["decision"]

    async def decision(self, board_id: str) -> dict | None:
        return await self.get(board_id, "decision")

    async def close(self) -> None:
        return None


def redis_client(url: str, timeout_s: float = 0.25):
    """The gateway's Redis client. Short timeouts: a dead or blackholed Redis must cost one
    timeout, not a hung request. One immediate retry on a *connection* error only (a pooled
    connection that an outage killed is replaced at once, instead of failing the call),
    never on a timeout (that would double the cost of a blackhole); redis-py's default of
    three retries with backoff measured 3.7 s per call against a blackholed Redis. Idle
    pooled connections are pinged before use (``health_check_interval``). RESP2: with
    redis-py 8's RESP3 a connection re-made after an outage kept failing its first health
    check (one pairing call in three failed for seconds after Redis came back, each
    sending the worker back to in-process pairing); with RESP2 none did."""
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    return aioredis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_s,
                             socket_timeout=timeout_s, health_check_interval=1, protocol=2,
                             retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                             # pub/sub (the pairing wait) reconnects only on errors named here
                             retry_on_error=[RedisConnectionError], retry_on_timeout=False)


class RedisPairStore:
    def __init__(self, url: str, prefix: str = "pcb:", ttl_s: int = DEFAULT_TTL_S, timeout_s: float = 0.25):
        self.redis = redis_client(url, timeout_s)
        self.prefix, self.ttl_s = prefix, ttl_s

    def key(self, board_id: str) -> str:
        """The Redis hash that holds a board's sides and decision."""
        return f"{self.prefix}pair:{board_id}"

    _key = key

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
        deadline = time.monotonic() + timeout_s
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(key)
            found = await self.get(board_id, side)  # after subscribing: no lost wake-up
            while found is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 0.5))
                if msg is not None and msg.get("data") == side:
                    found = await self.get(board_id, side)
            return found
        finally:
            with contextlib.suppress(Exception):  # a broken pubsub connection is dropped
                await pubsub.aclose()

    async def decide(self, board_id: str, make: MakeDecision) -> dict:
        from redis.exceptions import WatchError

        key = self._key(board_id)
        async with self.redis.pipeline(transaction=True) as p:
            while True:
                try:
                    await p.watch(key)
                    stored = await p.hgetall(key)
                    if "decision" in stored:
                        return json.loads(stored["decision"])
                    decision = make({k: json.loads(v) for k, v in stored.items() if k in OTHER})
                    p.multi()
                    p.hset(key, "decision", json.dumps(decision))
                    p.expire(key, self.ttl_s)
                    await p.execute()
                    return decision
                except WatchError:  # a side or a decision landed meanwhile: look again
                    continue

    async def decision(self, board_id: str) -> dict | None:
        return await self.get(board_id, "decision")

    async def close(self) -> None:
        await self.redis.aclose()


def is_redis_failure(e: BaseException) -> bool:
    """Redis (or the network to it) failed, as opposed to a bug in what we asked."""
    from redis.exceptions import ResponseError

    if isinstance(e, ResponseError):  # a wrong command or type: a bug, not an outage
        return False
    return isinstance(e, OSError | ConnectionError | TimeoutError) or type(e).__module__.startswith("redis")


class FallbackPairStore:
    """Redis first; while Redis does not answer, this process's memory. The line keeps
    moving through a Redis outage: sides that reach the same process still pair, the others
    are decided ``partial`` after the window (never a hang, never an error to the edge).
    Once down, calls go straight to memory (no timeout per call) while a probe pings Redis
    every ``probe_s``; the first PONG switches back. A board that was handled in memory on
    this process stays there (sticky, for the store's TTL): its sides and its decision must
    be read where they were written, or a board straddling the recovery would be decided
    without the side this process already holds. ``degraded`` is exported in
    /api/system-status."""

    def __init__(self, primary: RedisPairStore, probe_s: float = 0.25):
        self.primary, self.local = primary, MemoryPairStore()
        self.probe_s = probe_s
        self.redis = primary.redis
        self._down = False
        self._probe: asyncio.Task | None = None
        self._local_boards: dict[str, float] = {}  # board -> when it went local (monotonic)

    def _is_local(self, board_id: str) -> bool:
        t = self._local_boards.get(board_id)
        if t is None:
            return False
        if time.monotonic() - t > self.local.ttl_s:
            del self._local_boards[board_id]
            return False
        return True

    def _go_local(self, board_id: str) -> None:
        if len(self._local_boards) > 100_000:  # an outage of hours: forget the oldest
            self._local_boards = dict(list(self._local_boards.items())[-50_000:])
        self._local_boards.setdefault(board_id, time.monotonic())

    @property
    def degraded(self) -> bool:
        return self._down

    async def _call(self, name: str, board_id: str, *args, **kwargs):
        if not self._down and not self._is_local(board_id):
            try:
                return await getattr(self.primary, name)(board_id, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - only Redis failures mark Redis down
                self.report_error(e, name)
        self._go_local(board_id)
        return await getattr(self.local, name)(board_id, *args, **kwargs)

    def report_error(self, e: BaseException, what: str) -> None:
        """A call to the shared store raised: Redis failing marks it down; anything else (a redis-py
        client in a state it should not be in after a cut, a bug in what we asked) is
        logged with its traceback and only this board goes in-process - the edge gets its
        answer either way, never a 500 because pairing went wrong."""
        if is_redis_failure(e):
            self.report_failure(e, what)
        else:
            log.error("unexpected error from the Redis pair store in %s; this board pairs in-process",
                      what, exc_info=e)

    def report_failure(self, e: BaseException, what: str = "") -> None:
        """A Redis call failed (here or in a neighbour sharing the client): go local."""
        if not self._down:
            log.warning("Redis unreachable (%s in %s: %s): pairing in-process until it answers",
                        type(e).__name__, what or "a call", e)
        self._down = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_for_redis(), name="redis-probe")

    async def _wait_for_redis(self) -> None:
        while self._down:
            await asyncio.sleep(self.probe_s)
            try:
                await self.redis.ping()
            except Exception:  # noqa: BLE001 - still down
                continue
            self._down = False
            log.warning("Redis answers again: pairing through Redis")

    async def put(self, board_id: str, side: str, result: dict) -> None:
        await self._call("put", board_id, side, result)

    async def get(self, board_id: str, side: str) -> dict | None:
        return await self._call("get", board_id, side)

    async def wait_for(self, board_id: str, side: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        if not self._down and not self._is_local(board_id):
            try:
                return await self.primary.wait_for(board_id, side, timeout_s)
            except Exception as e:  # noqa: BLE001
                self.report_error(e, "wait_for")
        self._go_local(board_id)
        # whatever the failed call cost comes out of the window, never on top of it
        return await self.local.wait_for(board_id, side, max(0.0, deadline - time.monotonic()))

    async def decide(self, board_id: str, make: MakeDecision) -> dict:
        if not self._down and not self._is_local(board_id):
            try:
                return await self.primary.decide(board_id, make)
            except Exception as e:  # noqa: BLE001
                # a timeout on EXEC leaves the outcome unknown: Redis may hold a decision
                # already; one more read before deciding alone (never two decisions if avoidable)
                with contextlib.suppress(Exception):
                    found = await self.primary.decision(board_id)
                    if found is not None:
                        return found
                self.report_error(e, "decide")
        self._go_local(board_id)
        return await self.local.decide(board_id, make)

    async def decision(self, board_id: str) -> dict | None:
        return await self._call("decision", board_id)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.primary.close()

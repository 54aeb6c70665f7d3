"""Line sessions: how the two edges of one line agree on the middle part of their board ids
(``<line>-<session>-<n>``) so that board ids never repeat across restarts.

Each edge asks for a session when it starts (``POST /v1/line-session``). The rule:

- the line's current session is *joined* when it was opened less than ``join_window_s``
  ago and this side has not joined it yet (the two edges started together);
- otherwise a new random session is opened, with only this side in it (a restart: this
  side's board counter went back to 0, so it must never reuse the old session's ids).

So both edges restarted together share a fresh session; one edge restarted alone gets a
session the other does not have, and its boards are ``partial``/``late`` (visible in the
metrics and the system log) until both edges restart at a gap in the line. A board id
can never be reused, so an old board's answer can never be replayed onto a new frame.

State: Redis (shared by every replica; WATCH/MULTI) or, without Redis or while it is down,
this process's memory.
"""

from __future__ import annotations

import json
import logging
import secrets
import time

log = logging.getLogger("gateway.line_sessions")


def new_session() -> str:
    """Unique per start: the time (readable in logs) and 32 random bits."""
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(4)}"


def join(state: dict | None, side: str, now: float, join_window_s: float) -> dict:
    """The line's next state after ``side`` asked for a session (pure)."""
    if state and side not in state["sides"] and now - state["opened"] <= join_window_s:
        return {**state, "sides": sorted([*state["sides"], side])}
    return {"session": new_session(), "opened": now, "sides": [side]}


class LineSessions:
    def __init__(self, shared=None, join_window_s: float = 60.0, prefix: str = "pcb:", ttl_s: int = 7 * 86400):
        self.shared, self.join_window_s = shared, join_window_s
        self.prefix, self.ttl_s = prefix, ttl_s
        self._local: dict[str, dict] = {}

    async def open(self, line_id: str, side: str) -> str:
        now = time.time()
        redis = None if self.shared is None or self.shared.degraded else self.shared.redis
        if redis is not None:
            try:
                return await self._open_shared(redis, line_id, side, now)
            except Exception as e:  # noqa: BLE001 - Redis away: this replica decides alone
                log.warning("line sessions: Redis unavailable (%r), deciding in-process", e)
                self.shared.report_failure(e, "line session")
        state = join(self._local.get(line_id), side, now, self.join_window_s)
        self._local[line_id] = state
        return state["session"]

    async def _open_shared(self, redis, line_id: str, side: str, now: float) -> str:
        from redis.exceptions import WatchError

        key = f"{self.prefix}line-session:{line_id}"
        async with redis.pipeline(transaction=True) as p:
            while True:
                try:
                    await p.watch(key)
                    raw = await p.get(key)
                    state = join(json.loads(raw) if raw else None, side, now, self.join_window_s)
                    p.multi()
                    p.set(key, json.dumps(state), ex=self.ttl_s)
                    await p.execute()
                    return state["session"]
                except WatchError:  # the other edge asked at the same instant: look again
                    continue

"""Line sessions: how the two edges of one line agree on the middle part of their board ids
(``<line>-<session>-<n>``) so that board ids never repeat across restarts.

Each edge asks for a session when it starts (``POST /v1/line-session`` with a random
``start_id`` of that start). The rule (``join``):

- the same start asking again (a lost answer, a retry) gets the same session;
- the line's current session is *joined* when it was opened less than ``join_window_s``
  ago, this side has not joined it yet, and **no board has been counted under it yet**
  (its board 1 is not in the pair store): the two edges started together, at a gap in the
  line, both count from 1;
- otherwise a new random session is opened, with only this side in it. A side restarted
  alone must never reuse the old ids, and must never join a session the other side is
  already counting in (its board 1 would be the other side's board 1 of seconds ago).

So both edges restarted together share a fresh session; one edge restarted alone gets a
session the other does not have, and its boards are ``partial``/``late`` (visible in the
metrics and the system log) until both edges restart at a gap in the line.

State: Redis (shared by every replica; WATCH on the line's key and its board 1, then
MULTI) or, without Redis or while it is down, this process's memory (the two edges may then
end up in different sessions: safe, visible as partial boards).
"""

from __future__ import annotations

import json
import logging
import secrets
import time

from gateway.services.pair_store import FallbackPairStore, PairStore
from pcb.pairing import OTHER, board_id

log = logging.getLogger("gateway.line_sessions")


def new_session() -> str:
    """Unique per start: the second (readable in logs) and 24 random bits; short enough that
    ``<line (32)>-<session>-<n>`` fits the 64-character board id."""
    return f"{time.strftime('%y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(3)}"


def join(state: dict | None, side: str, start_id: str, now: float, join_window_s: float, counting: bool) -> dict:
    """The line's next state after ``side`` (in its start ``start_id``) asked (pure).
    ``counting``: a board was already seen under the current session."""
    if state and state["sides"].get(side) == start_id:
        return state
    if (state and side not in state["sides"] and now - state["opened"] <= join_window_s
            and not counting):
        return {**state, "sides": {**state["sides"], side: start_id}}
    return {"session": new_session(), "opened": now, "sides": {side: start_id}}


class LineSessions:
    def __init__(self, pairs: PairStore, join_window_s: float = 60.0, prefix: str = "pcb:",
                 ttl_s: int = 7 * 86400):
        self.pairs, self.join_window_s = pairs, join_window_s
        self.prefix, self.ttl_s = prefix, ttl_s
        self._local: dict[str, dict] = {}

    async def _counting(self, line_id: str, state: dict | None, store) -> bool:
        if not state:
            return False
        first = board_id(line_id, state["session"], 1)
        return any([await store.get(first, s) for s in OTHER])

    async def open(self, line_id: str, side: str, start_id: str) -> str:
        now = time.time()
        shared = self.pairs if isinstance(self.pairs, FallbackPairStore) else None
        if shared is not None and not shared.degraded:
            try:
                return await self._open_shared(shared, line_id, side, start_id, now)
            except Exception as e:  # Redis away (or a client left broken by it): this replica decides alone
                shared.report_error(e, "line session")
        local_store = shared.local if shared is not None else self.pairs
        state = self._local.get(line_id)
        state = join(state, side, start_id, now, self.join_window_s,
                     await self._counting(line_id, state, local_store))
        self._local[line_id] = state
        return state["session"]

    async def _open_shared(self, shared: FallbackPairStore, line_id: str, side: str, start_id: str,
                           now: float) -> str:
        from redis.exceptions import WatchError

        key = f"{self.prefix}line-session:{line_id}"
        async with shared.redis.pipeline(transaction=True) as p:
            while True:
                try:
                    await p.watch(key)
                    raw = await p.get(key)
                    state = json.loads(raw) if raw else None
                    counting = False
                    if state:
                        first = shared.primary.key(board_id(line_id, state["session"], 1))
                        await p.watch(first)  # board 1 landing meanwhile re-runs the check
                        counting = bool(await p.exists(first))
                    new = join(state, side, start_id, now, self.join_window_s, counting)
                    if new is state:
                        return state["session"]
                    p.multi()
                    p.set(key, json.dumps(new), ex=self.ttl_s)
                    await p.execute()
                    return new["session"]
                except WatchError:  # the other edge asked, or board 1 landed: look again
                    continue

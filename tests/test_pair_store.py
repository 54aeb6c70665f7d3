"""Pairing state: in-process and on the machine's real Redis (own key prefix, cleaned up)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from gateway.services.pair_store import MemoryPairStore, RedisPairStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
async def make_store(request):
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    made = []

    def factory():
        s = MemoryPairStore() if request.param == "memory" else RedisPairStore(REDIS_URL, prefix=prefix)
        made.append(s)
        return s

    # one memory store is shared by "two workers" (same process); Redis stores are separate
    # clients, like two gateway worker processes
    shared = factory() if request.param == "memory" else None
    yield (lambda: shared) if shared else factory
    if request.param == "redis":
        keys = await made[0].redis.keys(f"{prefix}*")
        if keys:
            await made[0].redis.delete(*keys)
    for s in made:
        await s.close()


async def test_waiter_gets_the_other_side_when_it_arrives(make_store):
    a, b = make_store(), make_store()

    async def late_right():
        await asyncio.sleep(0.2)
        await b.put("B1", "right", {"verdict": 2})

    t0 = time.monotonic()
    task = asyncio.create_task(late_right())
    got = await a.wait_for("B1", "right", timeout_s=3)
    await task
    assert got == {"verdict": 2}
    assert time.monotonic() - t0 < 2


async def test_already_there_is_returned_at_once(make_store):
    a, b = make_store(), make_store()
    await b.put("B2", "right", {"verdict": 0})
    assert await a.wait_for("B2", "right", timeout_s=0.01) == {"verdict": 0}


async def test_timeout_is_bounded_and_returns_none(make_store):
    a = make_store()
    t0 = time.monotonic()
    assert await a.wait_for("B3", "right", timeout_s=0.3) is None
    assert 0.25 < time.monotonic() - t0 < 1.5


async def test_one_decision_per_board_across_workers(make_store):
    a, b = make_store(), make_store()
    results = await asyncio.gather(*[s.decide("B4", lambda sides, i=i: {"owner": i, "sides": sorted(sides)})
                                     for i, s in enumerate((a, b, a, b))])
    assert len({r["owner"] for r in results}) == 1  # the first decision stands for everyone
    assert await a.decision("B4") == results[0] == await b.decision("B4")


async def test_decision_sees_the_sides_present_at_that_instant(make_store):
    a, b = make_store(), make_store()
    await b.put("B5", "right", {"code": 2})
    d = await a.decide("B5", lambda sides: {"sides": sorted(sides)})
    assert d == {"sides": ["right"]}
    await a.put("B5", "left", {"code": 0})  # a side after the decision changes nothing
    assert await b.decide("B5", lambda sides: {"sides": sorted(sides)}) == {"sides": ["right"]}


async def test_an_unexpected_error_from_redis_pairs_in_process_not_a_500(caplog):
    """A redis-py client in a state it should not be in after a cut (or any other surprise
    from the shared store) must not fail the edge's request: the board pairs in-process,
    the error is logged with its traceback, Redis is not marked down for it."""
    from gateway.services.pair_store import FallbackPairStore

    class Broken:
        redis = None

        async def _boom(self, *a, **k):
            raise RuntimeError("readuntil() called while another coroutine is already waiting")

        put = get = wait_for = decide = decision = _boom

        async def close(self):
            pass

    store = FallbackPairStore(Broken())
    await store.put("B1", "left", {"code": 0})
    assert await store.get("B1", "left") == {"code": 0}
    assert await store.wait_for("B2", "right", 0.05) is None
    made = await store.decide("B3", lambda sides: {"code": 2, "sides": sorted(sides)})
    assert made["code"] == 2 and not store.degraded
    assert "unexpected error from the Redis pair store" in caplog.text
    await store.close()

"""Gateway pieces on their own: image retention, live events over Redis."""

from __future__ import annotations

import asyncio
import os
import time

from gateway.services.image_store import ImageStore
from gateway.services.live import LiveFeed


def test_image_policy_and_retention(tmp_path):
    store = ImageStore(tmp_path, "defects", max_age_days=1, max_bytes=2500)
    assert store.wants(2) and not store.wants(0)
    assert ImageStore(tmp_path, "all").wants(0) and not ImageStore(tmp_path, "none").wants(3)
    stems = [ImageStore.stem(f"id{i}") for i in range(4)]
    for i, stem in enumerate(stems):
        store.save(stem, "left", b"\xff\xd8" + bytes(1000) + b"\xff\xd9")
        os.utime(store.path(stem, "left"), (time.time() - 10 + i, time.time() - 10 + i))
    old = store.path(stems[0], "left")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    removed = store.prune()
    left = [s for s in stems if store.path(s, "left").exists()]
    assert removed == 2 and left == stems[2:]  # too old first, then the oldest until under 2500 B


async def test_live_events_cross_workers_through_redis():
    import redis.asyncio as aioredis

    a, b = (LiveFeed(aioredis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)) for _ in range(2))
    for f in (a, b):
        f.start()
    q = b.subscribe()
    try:
        await asyncio.sleep(0.3)  # let the relays subscribe
        await a.publish({"id": "x1", "verdict": "discard"})
        event = await asyncio.wait_for(q.get(), 5)
        assert event == {"id": "x1", "verdict": "discard"}
    finally:
        for f in (a, b):
            await f.stop()
            await f.redis.aclose()


def test_heartbeats_seen_by_one_worker_count_on_every_worker(tmp_path):
    """Two workers (or pods) over one database: a heartbeat flushed by one is picked up by
    the other's refresh (online status and edge metrics agree) and not written back."""
    from gateway.core.metrics import EDGE_LAST_SEEN, EDGES_ONLINE, observe_edges
    from gateway.services.devices import DeviceRegistry
    from store.migrate import upgrade
    from store.session import make_engine, make_sessionmaker

    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    a, b = (DeviceRegistry(make_sessionmaker(make_engine(url))) for _ in range(2))
    _, key = a.create("pi-left", "left", True)
    b.refresh()
    a.authenticate("pi-left", key)  # a heartbeat reaches worker a only
    assert a.flush_last_seen() == 1
    observe_edges(b, online_after_s=30)
    assert EDGES_ONLINE._value.get() == 0
    b.refresh()
    assert abs(b.last_seen["pi-left"] - a.last_seen["pi-left"]) < 1  # the database keeps seconds
    assert b.flush_last_seen() == 0
    observe_edges(b, online_after_s=30)
    assert EDGES_ONLINE._value.get() == 1
    assert EDGE_LAST_SEEN.labels("pi-left", "left")._value.get() == b.last_seen["pi-left"]
    a.last_seen["pi-left"] += 120  # a later heartbeat, again on worker a: b follows
    a.flush_last_seen()
    b.refresh()
    assert abs(b.last_seen["pi-left"] - a.last_seen["pi-left"]) < 1

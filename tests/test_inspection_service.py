"""Paired inspection against the real Triton server: pairing, partial, late, one GPIO pulse
per board across workers (Redis), idempotent retries, nothing lost (outbox)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from gateway.services.devices import DeviceInfo
from gateway.services.idempotency import IdempotencyConflict
from gateway.services.inspection import InspectionService, Submission
from gateway.services.outbox import Outbox
from gateway.services.pair_store import MemoryPairStore, RedisPairStore
from gateway.services.triton import TritonService
from pcb.synthetic import render_board
from tests.conftest import close_redis_stores, encode

LEFT = DeviceInfo("pi-left", "left", True, "x")
RIGHT = DeviceInfo("pi-right", "right", False, "x")
WINDOW_MS = 600


@pytest.fixture
async def service(triton, tmp_path):
    t = TritonService(triton.grpc_url)
    svc = InspectionService(t, MemoryPairStore(), Outbox(tmp_path / "outbox.db"), WINDOW_MS)
    yield svc
    await t.close()


def _img(seed: int, force=None) -> bytes:
    return encode(render_board(seed, force=force).image)


async def test_right_then_left_pairs_and_only_left_gets_gpio(service):
    board = f"B-{uuid.uuid4().hex[:6]}"
    r = await service.inspect_side(Submission(RIGHT, board), "right", _img(1, ["short"]))
    assert r["gpio"] is None and r["board"]["pairing"] == "pending"
    t0 = time.monotonic()
    left = await service.inspect_side(Submission(LEFT, board), "left", _img(2, []))
    assert time.monotonic() - t0 < WINDOW_MS / 1000  # the right side was already there
    assert left["board"]["pairing"] == "paired" and not left["board"]["partial"]
    codes = {"normal": 0, "component_defect": 1, "solder_defect": 2, "discard": 3}
    want = max(codes[r["verdict"]["code"]], codes[left["verdict"]["code"]])
    assert codes[left["board"]["verdict"]["code"]] == want
    pins = {0: 23, 1: 17, 2: 27, 3: 22}
    assert left["gpio"]["pin"] == pins[want]
    assert service.outbox.depth() == 2


async def test_left_alone_is_partial_within_the_window(service):
    board = f"B-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    left = await service.inspect_side(Submission(LEFT, board), "left", _img(3))
    elapsed = time.monotonic() - t0
    assert WINDOW_MS / 1000 <= elapsed < WINDOW_MS / 1000 + 2.0
    assert left["board"]["pairing"] == "partial" and left["board"]["partial"] is True
    assert left["board"]["verdict"] == left["verdict"] and left["gpio"] is not None
    late = await service.inspect_side(Submission(RIGHT, board), "right", _img(4))
    assert late["board"]["pairing"] == "late" and late["gpio"] is None


async def test_concurrent_sides_pair(service):
    board = f"B-{uuid.uuid4().hex[:6]}"
    left, right = await asyncio.gather(
        service.inspect_side(Submission(LEFT, board), "left", _img(5)),
        service.inspect_side(Submission(RIGHT, board), "right", _img(6)))
    assert left["board"]["pairing"] == "paired" and left["gpio"] is not None
    assert right["gpio"] is None


async def test_retry_with_idempotency_key_returns_the_first_answer(service):
    board = f"B-{uuid.uuid4().hex[:6]}"
    sub = Submission(RIGHT, board, idempotency_key="k-1")
    first = await service.inspect_side(sub, "right", _img(7))
    again = await service.inspect_side(sub, "right", _img(7))
    assert again == first
    assert service.outbox.depth() == 1
    # the same key with another image is another request: refused, nothing stored
    with pytest.raises(IdempotencyConflict):
        await service.inspect_side(sub, "right", _img(8))
    with pytest.raises(IdempotencyConflict):  # or another board
        await service.inspect_side(Submission(RIGHT, board + "x", idempotency_key="k-1"), "right", _img(7))
    assert service.outbox.depth() == 1


async def test_concurrent_duplicates_run_once(service):
    board = f"B-{uuid.uuid4().hex[:6]}"
    sub = Submission(LEFT, board, idempotency_key="k-2")
    img = _img(11)
    runs = []
    inner = service._inspect_side

    async def counted(*args):
        runs.append(1)
        return await inner(*args)

    service._inspect_side = counted
    answers = await asyncio.gather(*[service.inspect_side(sub, "left", img) for _ in range(3)])
    assert answers[0] == answers[1] == answers[2] and answers[0]["gpio"] is not None
    assert len(runs) == 1  # inspected once: the duplicates waited for the first answer
    assert service.outbox.depth() == 1


async def test_two_workers_sharing_redis_fire_one_pulse_per_board(triton, tmp_path):
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    t = TritonService(triton.grpc_url)
    stores = [RedisPairStore("redis://127.0.0.1:6379/0", prefix=prefix) for _ in range(2)]
    workers = [InspectionService(t, s, Outbox(tmp_path / f"o{i}.db"), WINDOW_MS) for i, s in enumerate(stores)]
    try:
        board = "B-shared"
        # the left device retries the same board on the other worker (no idempotency key):
        # both requests are answered, only one carries the GPIO command
        results = await asyncio.gather(
            workers[0].inspect_side(Submission(LEFT, board), "left", _img(9)),
            workers[1].inspect_side(Submission(RIGHT, board), "right", _img(10)),
            workers[1].inspect_side(Submission(LEFT, board), "left", _img(9)))
        gpios = [r["gpio"] for r in results if r["gpio"]]
        assert len(gpios) == 1
        assert results[0]["board"]["pairing"] == "paired"
    finally:
        await close_redis_stores(stores, prefix)
        await t.close()

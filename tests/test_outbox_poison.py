"""Rows the database refuses, and several drainers on one outbox file, against the
machine's MariaDB: a poison row never blocks the others, is quarantined (kept) after N
refusals and can be sent back; two drainers racing for one file write every row once and
raise no false "database writes failing" alarm; every background chore is isolated."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from gateway.core.metrics import CHORE_ERRORS, CHORE_LAST_SUCCESS, DB_WRITE_FAILURES, OUTBOX_QUARANTINED
from gateway.services.background import BackgroundTask
from gateway.services.db_writer import DbWriter
from gateway.services.drainer import Drainer
from gateway.services.housekeeping import Housekeeping
from gateway.services.image_store import ImageStore
from gateway.services.outbox import Outbox
from store.migrate import upgrade
from store.models import Inspection
from store.session import make_engine, make_sessionmaker
from tests.conftest import fresh_mariadb


def _row(i: int, board: str | None = None) -> tuple[str, dict]:
    iid = str(uuid.uuid4())
    return iid, {"id": iid, "board_id": board or f"B{i}", "device_id": "pi-1", "camera_side": "left",
                 "verdict": "normal", "verdict_code": 0, "confidence": 1.0, "boxes": [], "gpio_pin": 23,
                 "gpio_duration_ms": 300, "model_version": 1, "latency_ms": 1.0, "created_at": "2026-12-01T10:00:00"}


@pytest.fixture
def db():
    with fresh_mariadb() as name:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
        upgrade(url)
        engine = make_engine(url)
        yield make_sessionmaker(engine)
        engine.dispose()


def _count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Inspection))


def test_a_poison_row_is_quarantined_and_never_blocks_the_others(db, tmp_path):
    box = Outbox(tmp_path / "o.db")
    for i in range(3):
        iid, payload = _row(i)
        box.put(iid, "inspection", payload)
    poison_id, poison = _row(9, board="X" * 200)  # longer than the column: MariaDB refuses it (strict mode)
    box.put(poison_id, "inspection", poison)
    for i in range(3, 6):
        iid, payload = _row(i)
        box.put(iid, "inspection", payload)
    drainer = Drainer(box, DbWriter(db), max_attempts=3)
    failures_before = DB_WRITE_FAILURES._value.get()

    async def drain(rounds: int):
        for _ in range(rounds):
            await drainer.once()

    asyncio.run(drain(1))
    assert _count(db) == 6 and box.depth() == 1  # the good rows went through at once
    asyncio.run(drain(3))
    assert box.depth() == 0 and box.quarantine_depth() == 1  # set aside, kept
    q = box.quarantined()[0]
    assert q["id"] == poison_id and q["attempts"] == 3 and "Data too long" in q["last_error"]
    assert DB_WRITE_FAILURES._value.get() == failures_before  # a refused row is not an outage
    assert OUTBOX_QUARANTINED._value.get() == 1  # each drain step tells the operator, not only the loop
    # after a fix (here: a shorter board id is impossible, so just send it back) it is retried
    assert box.requeue([poison_id]) == 1 and box.depth() == 1 and box.quarantine_depth() == 0
    asyncio.run(drain(1))
    assert OUTBOX_QUARANTINED._value.get() == 0 and box.depth() == 1  # refused once more, not yet set aside


def test_two_drainers_on_one_file_write_every_row_once_without_false_alarms(db, tmp_path):
    path = tmp_path / "shared.db"
    box = Outbox(path)
    ids = []
    for i in range(400):
        iid, payload = _row(i)
        ids.append(iid)
        box.put(iid, "inspection", payload)
    failures_before = DB_WRITE_FAILURES._value.get()
    errors: list[Exception] = []

    def drain(worker: int) -> None:
        mine = Outbox(path)  # its own connection, as another worker process would have
        writer = DbWriter(db)
        while mine.depth():
            try:
                mine.drain_once(writer, 50, rejected=writer.rejects)
            except Exception as e:  # noqa: BLE001 - would be the false alarm
                errors.append(e)

    threads = [threading.Thread(target=drain, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert _count(db) == 400 and box.depth() == 0 and box.quarantine_depth() == 0
    assert DB_WRITE_FAILURES._value.get() == failures_before


class _Boom:
    def __call__(self):
        raise RuntimeError("chore failed")


def test_each_chore_is_isolated_counted_and_the_loop_goes_on(tmp_path):
    """One failing chore (database away for the registry, a vanished image during a prune
    on a shared volume, a locked outbox) never stops the others or the next round."""
    images = ImageStore(tmp_path / "img", "all", max_age_days=0)
    for i in range(5):
        images.save(images.stem(f"i{i}"), "left", b"jpeg")

    class Devices:
        refresh = _Boom()
        flushed = 0

        def flush_last_seen(self):
            Devices.flushed += 1

    hk = Housekeeping(Devices(), images, Outbox(tmp_path / "o.db"), prune_every=1)
    errors_before = CHORE_ERRORS.labels("device_registry")._value.get()
    results = asyncio.run(hk.once())
    assert results == {"device_registry": False, "heartbeats": True, "image_prune": True,
                       "idempotency_prune": True}
    assert not list((tmp_path / "img").rglob("*.jpg"))  # pruned despite the registry failing
    assert CHORE_ERRORS.labels("device_registry")._value.get() == errors_before + 1
    assert CHORE_LAST_SUCCESS.labels("heartbeats")._value.get() > time.time() - 60
    # a prune racing another gateway on the same volume: files vanish under it
    for i in range(50):
        images.save(images.stem(f"j{i}"), "left", b"jpeg")
    stop = threading.Event()

    def rival():
        while not stop.is_set():
            for p in list((tmp_path / "img").rglob("*.jpg"))[::2]:
                p.unlink(missing_ok=True)

    t = threading.Thread(target=rival)
    t.start()
    try:
        for _ in range(5):
            images.prune()  # no FileNotFoundError
    finally:
        stop.set()
        t.join()
    results = asyncio.run(hk.once())
    assert results["heartbeats"] and Devices.flushed == 2


CHORES = ("device_registry", "heartbeats", "principals", "image_prune", "idempotency_prune")


@pytest.mark.parametrize("failing", CHORES)
def test_a_failing_chore_is_logged_counted_and_the_loop_goes_on(failing):
    """Each of housekeeping's chores, failing every time in the running loop: its error is
    logged and counted (``gateway_chore_errors_total{chore}``) each round, its last-success
    stamp stays old (``GatewayChoreStalled``), and the loop goes on: every chore, the failing
    one included, runs again round after round and the others succeed."""
    import logging
    from collections import Counter
    from types import SimpleNamespace

    calls: Counter[str] = Counter()

    def chore(name: str):
        def run(*_):
            calls[name] += 1
            if name == failing:
                raise RuntimeError(f"{name} failed")
        return run

    hk = Housekeeping(SimpleNamespace(refresh=chore("device_registry"), flush_last_seen=chore("heartbeats")),
                      SimpleNamespace(prune=chore("image_prune")),
                      SimpleNamespace(prune_idempotency=chore("idempotency_prune")),
                      every_s=0.01, prune_every=1, principals=SimpleNamespace(refresh=chore("principals")))
    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("gateway.background")
    logger.addHandler(handler)
    errors_before, started = CHORE_ERRORS.labels(failing)._value.get(), time.time()

    async def go() -> bool:
        hk.start()
        deadline = time.monotonic() + 10
        while (len(calls) < len(CHORES) or min(calls.values()) < 3) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        alive = hk._task is not None and not hk._task.done()
        await hk.stop()
        return alive

    try:
        assert asyncio.run(go())  # the loop itself never ended
    finally:
        logger.removeHandler(handler)
    assert set(calls) == set(CHORES) and min(calls.values()) >= 3, calls  # round after round
    failures = CHORE_ERRORS.labels(failing)._value.get() - errors_before
    # every failure counted (a run cut short by the stop is neither a failure nor a success)
    assert failures >= 3 and calls[failing] - 1 <= failures <= calls[failing], (failures, calls[failing])
    assert sum(f"background chore {failing} failed" in m for m in logged) == failures  # and logged
    assert CHORE_LAST_SUCCESS.labels(failing)._value.get() < started
    assert all(CHORE_LAST_SUCCESS.labels(c)._value.get() >= started for c in CHORES if c != failing)


def test_a_background_loop_that_dies_is_restarted():
    runs = []

    class Flaky(BackgroundTask):
        restart_after_s = 0.05

        async def loop(self):
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError("a bug in the loop")
            await asyncio.sleep(10)

    async def go():
        task = Flaky()
        task._start(task.loop, "flaky")
        await asyncio.sleep(0.5)
        await task.stop()

    asyncio.run(go())
    assert len(runs) == 3


def test_the_drainer_survives_a_dead_database_and_a_failing_event_log(tmp_path):
    """The drainer chore: the database refusing connections and the event log raising on
    top of it are counted, and the loop keeps going (it used to end in its except branch)."""
    from sqlalchemy.exc import OperationalError

    class DeadDb:
        def __call__(self, rows):
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database away"))

        def rejects(self, e):
            return False

    def broken_events(*args, **kwargs):
        raise OSError("event log disk full")

    box = Outbox(tmp_path / "o.db")
    iid, payload = _row(1)
    box.put(iid, "inspection", payload)
    drainer = Drainer(box, DeadDb(), idle_s=0.01, max_backoff_s=0.02, events=broken_events)
    errors_before = CHORE_ERRORS.labels("outbox_drain")._value.get()

    async def go():
        drainer.start()
        await asyncio.sleep(0.5)
        alive = not drainer._task.done()
        await drainer.stop()
        return alive

    assert asyncio.run(go())
    assert drainer.failures >= 3 and box.depth() == 1  # kept, retried, still running
    assert CHORE_ERRORS.labels("outbox_drain")._value.get() >= errors_before + 3


def test_statistics_days_follow_the_plant_time_zone(monkeypatch):
    from datetime import date, datetime

    from gateway.api.operator import _day_range
    from settings.environment import get_settings

    monkeypatch.setenv("PLANT_TIMEZONE", "Asia/Seoul")
    get_settings.cache_clear()
    try:
        lo, hi = _day_range(date(2026, 12, 1), date(2026, 12, 1))
        assert (lo, hi) == (datetime(2026, 11, 30, 15, 0), datetime(2026, 12, 1, 15, 0))  # KST day, stored as UTC
        monkeypatch.setenv("PLANT_TIMEZONE", "UTC")
        get_settings.cache_clear()
        assert _day_range(date(2026, 12, 1), date(9999, 12, 31))[1] == datetime(9999, 1, 1)  # clamped, no overflow
    finally:
        get_settings.cache_clear()

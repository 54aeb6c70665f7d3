"""The durable outbox: nothing accepted is lost or stored twice, through a database outage
(MariaDB behind a proxy that the test cuts) and a gateway restart (a new Outbox on the
same file)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from gateway.services.db_writer import DbWriter
from gateway.services.outbox import Outbox
from store.migrate import upgrade
from store.models import Inspection
from store.session import make_engine, make_sessionmaker
from tests.tcp_proxy import TcpProxy


def _inspection(i: int, board: str = "B") -> tuple[str, dict]:
    iid = str(uuid.uuid4())
    return iid, {"id": iid, "board_id": f"{board}{i}", "device_id": "pi-1", "camera_side": "left",
                 "verdict": "normal", "verdict_code": 0, "confidence": 1.0, "boxes": [],
                 "gpio_pin": 23, "gpio_duration_ms": 300, "model_version": 1,
                 "latency_ms": 12.5, "created_at": "2026-11-23T10:00:00"}


def _put(box: Outbox, i: int) -> None:
    iid, payload = _inspection(i)
    box.put(iid, "inspection", payload)


@pytest.fixture
def mariadb_url():
    name = f"pcb_test_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    conn.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def _count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Inspection))


def test_sqlite_drain_and_resend_are_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'main.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    box = Outbox(tmp_path / "outbox.db")
    rows = [_inspection(i) for i in range(5)]
    for iid, p in rows:
        box.put(iid, "inspection", p)
    box.put(rows[0][0], "inspection", rows[0][1])  # the same id again: ignored
    assert box.depth() == 5
    assert box.drain_once(DbWriter(sessions)) == 5
    assert box.depth() == 0 and _count(sessions) == 5
    # a crash after the DB commit but before the delete re-sends the rows: still 5
    for iid, p in rows:
        box.put(iid, "inspection", p)
    box.drain_once(DbWriter(sessions))
    assert _count(sessions) == 5


@pytest.mark.parametrize("database", ["sqlite", "mariadb"])
def test_two_replicas_answers_to_one_request_are_one_row(tmp_path, request, database):
    """While Redis is down a retry that reaches the other replica is answered there too:
    two outboxes hold two inspections of one request (same device + Idempotency-Key). The
    database keeps one row, whichever drains first, also when both drain at once."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'main.db'}"
    else:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{request.getfixturevalue('mariadb_url')}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    boxes = [Outbox(tmp_path / f"outbox{i}.db") for i in range(2)]
    answers = []
    for box in boxes:
        iid, p = _inspection(1, "RK")
        p["request_key"] = "pi-1:RK1:left"
        box.put(iid, "inspection", p)
        answers.append(iid)
    # another request of the same board (no key): a row of its own
    iid, p = _inspection(2, "RK")
    boxes[1].put(iid, "inspection", p)
    writers = [DbWriter(sessions), DbWriter(sessions)]
    with ThreadPoolExecutor(2) as pool:  # both replicas drain at once, as their drainers do
        list(pool.map(lambda i: boxes[i].drain_once(writers[i], rejected=writers[i].rejects), range(2)))
    for _ in range(3):  # a batch that lost the race was refused, its rows retried alone find the other row
        for box, w in zip(boxes, writers):
            box.drain_once(w, rejected=w.rejects)
    assert [b.depth() for b in boxes] == [0, 0] and [b.quarantine_depth() for b in boxes] == [0, 0]
    with sessions() as s:
        kept = list(s.scalars(select(Inspection.id).where(Inspection.request_key == "pi-1:RK1:left")))
    assert len(kept) == 1 and kept[0] in answers and _count(sessions) == 2
    assert sum(w.duplicates for w in writers) == 1


def test_idempotency_key_returns_the_first_response(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    a_id, a = _inspection(1)
    b_id, b = _inspection(2)
    assert box.put(a_id, "inspection", a, ("pi-1", "key-1", "fp-a", {"inspection_id": a_id})) is None
    first = box.put(b_id, "inspection", b, ("pi-1", "key-1", "fp-a", {"inspection_id": b_id}))
    assert first.response == {"inspection_id": a_id} and first.fingerprint == "fp-a"
    assert box.depth() == 1  # the retry wrote nothing
    assert box.seen("pi-1", "key-1") == first
    assert box.put(b_id, "inspection", b, ("pi-2", "key-1", "fp-b", {"inspection_id": b_id})) is None  # other device


def test_storage_failures_are_storage_errors(tmp_path):
    """A locked file (another writer holds it past the busy timeout) is a StorageError the
    gateway answers 503, never an sqlite3 error that would be a 500."""
    import sqlite3

    from gateway.services.outbox import StorageError

    box = Outbox(tmp_path / "outbox.db", busy_timeout_s=0.2)
    other = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        a_id, a = _inspection(3)
        with pytest.raises(StorageError):
            box.put(a_id, "inspection", a)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert box.put(a_id, "inspection", a) is None and box.depth() == 1


def test_mariadb_outage_and_restart_lose_nothing(tmp_path, mariadb_url):
    proxy = TcpProxy("127.0.0.1", 3306)
    try:
        url = f"mysql+pymysql://root:@127.0.0.1:{proxy.port}/{mariadb_url}"
        upgrade(url)
        sessions = make_sessionmaker(make_engine(url))
        box = Outbox(tmp_path / "outbox.db")
        for i in range(3):
            _put(box, i)
        assert box.drain_once(DbWriter(sessions)) == 3

        proxy.cut()  # the database goes away; inspections keep coming
        for i in range(3, 10):
            _put(box, i)
        with pytest.raises(DBAPIError):
            box.drain_once(DbWriter(sessions))
        assert box.depth() == 7
        assert box.peek(1)[0].attempts == 0  # an outage is not the rows' fault: no attempt counted

        box = Outbox(tmp_path / "outbox.db")  # the gateway restarts meanwhile
        assert box.depth() == 7
        proxy.restore()
        moved = 0
        for _ in range(5):  # the pool may hand out a dead connection once more
            try:
                moved += box.drain_once(DbWriter(sessions))
                break
            except Exception:
                continue
        assert moved == 7 and box.depth() == 0
        assert _count(sessions) == 10
    finally:
        proxy.close()


def test_concurrent_puts_share_commits_and_keep_their_answers(tmp_path):
    """Group commit: puts from many threads at once are all stored, each gets its own answer
    (a repeated idempotency key in the same group gets the first one's record), in fewer
    transactions than puts; a put that fails alone fails alone."""
    import threading

    box = Outbox(tmp_path / "outbox.db")
    commits = 0
    real = box._commit_group

    def counted(group):
        nonlocal commits
        commits += 1
        real(group)

    box._commit_group = counted  # type: ignore[method-assign]
    answers: dict[int, object] = {}
    ids = [_inspection(i) for i in range(64)]
    start = threading.Barrier(16)

    def worker(w: int) -> None:
        start.wait()
        for i in range(w, 64, 16):
            iid, p = ids[i]
            key = ("pi-1", f"k{i // 2}" if i != 5 else "solo", f"fp{i // 2}", {"inspection_id": iid})  # pairs share
            try:
                answers[i] = box.put(iid, "inspection", p if i != 5 else {"bad": object()}, key)
            except Exception as e:  # noqa: BLE001
                answers[i] = e

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(answers[5], TypeError)  # not JSON: its own error, nothing stored for it
    stored = {r[0] for r in box._conn().execute("SELECT id FROM pending")}
    for pair in range(32):
        a, b = 2 * pair, 2 * pair + 1
        if 5 in (a, b):
            assert answers[4] is None and stored & {ids[4][0], ids[5][0]} == {ids[4][0]}
            continue
        firsts = [i for i in (a, b) if answers[i] is None]
        assert len(firsts) == 1  # exactly one of the two holds the key ...
        other = ({a, b} - set(firsts)).pop()
        assert answers[other].response == {"inspection_id": ids[firsts[0]][0]}  # ... the other sees its answer
        assert ids[firsts[0]][0] in stored and ids[other][0] not in stored
    assert box.depth() == 32
    assert commits < 64


def test_a_locked_file_fails_every_waiting_put_within_about_one_busy_timeout(tmp_path):
    """Group commit keeps the bound on the line's wait: puts queued behind a commit that is
    stuck on a locked file give up with StorageError after about one busy timeout, not one
    timeout each in turn; nothing of them is stored."""
    import sqlite3
    import threading
    import time

    from gateway.services.outbox import StorageError

    box = Outbox(tmp_path / "outbox.db", busy_timeout_s=0.4)
    other = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    waited: list[tuple[float, object]] = []

    def worker(i: int) -> None:
        t0 = time.perf_counter()
        try:
            iid, payload = _inspection(i)
            box.put(iid, "inspection", payload)
            waited.append((time.perf_counter() - t0, None))
        except StorageError as e:
            waited.append((time.perf_counter() - t0, e))

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(waited) == 6 and all(isinstance(e, StorageError) for _, e in waited)
    assert max(w for w, _ in waited) < 0.4 * 2 + 0.3, waited  # one timeout (+ the leader's own)
    assert box.depth() == 0

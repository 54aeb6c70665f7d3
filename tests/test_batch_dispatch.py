"""Dispatch and the broker: a chunk is never left marked dispatched without a message.

The message is published inside the dispatch's transaction (``JobStore.take_dispatches``):
a dispatcher SIGKILLed between publishing and committing leaves its chunks queued (the
message it got out is stale and dropped), a worker that receives a message before the
commit waits for it on the row lock, and a chunk the broker refused goes back to the queue
with its generation spent. On the machine's MariaDB, with a real child process killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from batch.store import Dispatch, JobStore
from store.migrate import upgrade
from store.models import BatchChunk
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, fresh_mariadb


def _job(store: JobStore, n: int = 8, chunk: int = 2) -> str:
    return store.create_job([(f"/x/{i}.jpg", f"{i}.jpg") for i in range(n)], priority=1, chunk_size=chunk)


def _chunks(store: JobStore, job_id: str) -> dict[int, tuple[str, int]]:
    with store.sessions() as s:
        return {c.seq: (c.state, c.dispatches) for c in s.query(BatchChunk).filter_by(job_id=job_id)}


@pytest.fixture
def mariadb_url():  # a database per test: the window counts every job in it
    with fresh_mariadb() as name:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "mariadb"])
def store(request, tmp_path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else request.getfixturevalue("mariadb_url")
    if request.param == "sqlite":
        upgrade(url)
    return JobStore(make_sessionmaker(make_engine(url)))


def test_a_refused_chunk_goes_back_to_the_queue_and_its_message_stays_stale(store):
    jid = _job(store)
    published: list[Dispatch] = []

    def publish(d: Dispatch) -> None:
        published.append(d)
        if d.seq == 1:  # e.g. a publish that timed out after the broker took it
            raise ConnectionError("broker went away")

    sent = store.take_dispatches(3, 60, publish=publish)
    # the broker that refused one is not asked for the rest (each try may take seconds)
    assert [d.seq for d in sent] == [0] and len(published) == 2
    chunks = _chunks(store, jid)
    assert chunks[0] == ("dispatched", 1)
    assert chunks[1] == ("queued", 1) and chunks[2] == ("queued", 1)  # back in the queue, generations spent
    stray = published[1]
    again, third = store.take_dispatches(3, 60, publish=lambda d: None)
    assert (again.seq, again.generation) == (1, 2) and (third.seq, third.generation) == (2, 2)
    assert store.hold(jid, stray.seq, stray.generation) is False  # the one that got out does nothing
    assert store.hold(jid, again.seq, again.generation) is True


def test_a_dispatcher_that_dies_before_committing_leaves_its_chunks_queued(store):
    jid = _job(store)
    got_out: list[Dispatch] = []

    def publish(d: Dispatch) -> None:
        got_out.append(d)
        if len(got_out) == 2:
            raise KeyboardInterrupt  # the process ends here: nothing of this dispatch commits

    with pytest.raises(KeyboardInterrupt):
        store.take_dispatches(3, 60, publish=publish)
    assert set(_chunks(store, jid).values()) == {("queued", 0)}
    assert all(store.hold(jid, d.seq, d.generation) is False for d in got_out)
    assert len(store.take_dispatches(3, 60, publish=lambda d: None)) == 3


def test_a_message_received_before_the_commit_waits_for_it(mariadb_url):
    store = JobStore(make_sessionmaker(make_engine(mariadb_url)))
    _job(store, 2)
    delivered = threading.Event()
    held: list[tuple[bool, float]] = []

    def worker(d: Dispatch) -> None:  # the broker hands the message over at once
        delivered.wait(10)
        held.append((store.hold(d.job_id, d.seq, d.generation), time.monotonic()))

    def publish(d: Dispatch) -> None:
        threading.Thread(target=worker, args=(d,), daemon=True).start()
        delivered.set()
        time.sleep(0.5)  # the dispatcher is slow to commit

    store.take_dispatches(1, 60, publish=publish)
    committed = time.monotonic()
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        time.sleep(0.01)
    [(ok, at)] = held
    assert ok and at >= committed - 0.05  # it waited on the row lock, then held the lease


DISPATCHER = """
import json, sys, time
from batch.store import JobStore
from store.session import make_engine, make_sessionmaker
store = JobStore(make_sessionmaker(make_engine(sys.argv[1])))
def publish(d):
    print(json.dumps([d.job_id, d.seq, d.generation]), flush=True)
    time.sleep(3600)  # SIGKILLed here, between the message and the commit
store.take_dispatches(1, 60, publish=publish)
"""


def test_a_dispatcher_sigkilled_between_message_and_commit_loses_no_chunk(mariadb_url):
    store = JobStore(make_sessionmaker(make_engine(mariadb_url)))
    jid = _job(store, 2)
    child = subprocess.Popen([sys.executable, "-c", DISPATCHER, mariadb_url], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        job_id, seq, generation = json.loads(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert job_id == jid
    deadline = time.monotonic() + 10  # the server rolls the dead connection's transaction back
    while _chunks(store, jid)[seq] != ("queued", 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _chunks(store, jid)[seq] == ("queued", 0)
    assert store.hold(jid, seq, generation) is False  # its message, delivered late, does nothing
    [d] = store.take_dispatches(1, 60, publish=lambda d: None)
    assert (d.seq, d.generation) == (seq, 1) and store.hold(jid, d.seq, d.generation) is True

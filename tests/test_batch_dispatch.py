"""Dispatch and the broker: a chunk is never left marked dispatched without a message for
longer than a few seconds, and no generation is handed out twice.

A dispatch commits first (state, generation, unpublished), publishes, then marks the chunks
published (``batch/scheduler.py``); a worker's delivery marks its chunk published too. A
dispatcher SIGKILLed between the commit and the broker leaves its chunk unpublished, and the
sweeper sends it again after ``PUBLISH_GRACE_S`` under a new generation, even while other
workers are busy (before, such a chunk waited for "no worker alive for the lease": minutes).
A chunk the broker refused goes back to the queue with its generation spent. On SQLite and
the machine's MariaDB, with a real child process killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from celery import Celery

from batch.celery_app import configure
from batch.scheduler import dispatch
from batch.store import PUBLISH_GRACE_S, JobStore
from settings.environment import Settings
from store.migrate import upgrade
from store.models import BatchChunk, utcnow
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, fresh_mariadb

LEASE_S = 300.0


def _job(store: JobStore, n: int = 8, chunk: int = 2) -> str:
    return store.create_job([(f"/x/{i}.jpg", f"{i}.jpg") for i in range(n)], priority=1, chunk_size=chunk)


def _chunks(store: JobStore, job_id: str) -> dict[int, tuple[str, int, bool]]:
    with store.sessions() as s:
        return {c.seq: (c.state, c.dispatches, c.published) for c in s.query(BatchChunk).filter_by(job_id=job_id)}


@pytest.fixture
def mariadb_url():  # a database per test: the window counts every job in it
    with fresh_mariadb() as name:
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "mariadb"])
def store(request, tmp_path) -> JobStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("mariadb_url")
    return JobStore(make_sessionmaker(make_engine(url)))


def _busy_worker(store: JobStore, now) -> None:
    """Another job's chunk in a live worker's hands, renewed just now: a worker shows life."""
    other = _job(store, 2)
    [d] = [d for d in store.take_dispatches(99, 60, now=now) if d.job_id == other]
    store.mark_published([d])
    assert store.hold(other, d.seq, d.generation)
    store.claim(other, d.seq, "w:1")
    store.renew([(other, d.seq, d.generation)], now=now)


def test_published_chunks_are_marked_and_a_refusal_stops_the_round(store):
    jid = _job(store)
    sends: list[tuple[str, int, int, int]] = []

    def send(job_id: str, seq: int, priority: int, generation: int) -> None:
        sends.append((job_id, seq, priority, generation))
        if seq == 1:  # e.g. a publish that timed out after the broker took it
            raise ConnectionError("broker went away")

    # the broker that refused one is not asked for the rest (each try may take seconds)
    assert dispatch(store, send, window=3, aging_s=60) == 1 and len(sends) == 2
    chunks = _chunks(store, jid)
    assert chunks[0] == ("dispatched", 1, True)
    assert chunks[1][:2] == ("queued", 1) and chunks[2][:2] == ("queued", 1)  # generations spent
    stray = sends[1]
    assert dispatch(store, lambda *a: None, window=3, aging_s=60) == 2
    assert _chunks(store, jid)[1] == ("dispatched", 2, True) and _chunks(store, jid)[2] == ("dispatched", 2, True)
    assert store.hold(jid, stray[1], stray[3]) is False  # the one that got out does nothing
    assert store.hold(jid, 1, 2) is True


def test_an_unsent_dispatch_is_sent_again_after_the_grace_even_with_workers_busy(store):
    t0 = utcnow().replace(microsecond=0)
    jid = _job(store, 2)
    [d] = store.take_dispatches(1, 60, now=t0)  # committed; its dispatcher died before the broker
    assert _chunks(store, jid)[0] == ("dispatched", 1, False)
    _busy_worker(store, t0 + timedelta(seconds=PUBLISH_GRACE_S))
    assert store.requeue_stale(LEASE_S, now=t0 + timedelta(seconds=PUBLISH_GRACE_S - 1)) == 0  # not yet
    later = t0 + timedelta(seconds=PUBLISH_GRACE_S + 1)
    assert store.requeue_stale(LEASE_S, now=later) == 1
    assert _chunks(store, jid)[0][:2] == ("queued", 1)
    [again] = [x for x in store.take_dispatches(8, 60, now=later) if x.job_id == jid]
    assert again.generation == 2  # never the lost dispatch's generation again
    assert store.hold(jid, d.seq, d.generation) is False


def test_a_delivered_message_marks_its_chunk_published(store):
    """A dispatcher that died after its message got out, before marking it: the worker's
    delivery marks it, so the sweeper never sends it a second time."""
    t0 = utcnow().replace(microsecond=0)
    jid = _job(store, 2)
    [d] = store.take_dispatches(1, 60, now=t0)
    assert store.hold(jid, d.seq, d.generation)  # the message arrives at a worker
    assert _chunks(store, jid)[0] == ("dispatched", 1, True)
    # its lease is renewed by the worker; a chunk waiting before its claim is not re-sent either
    assert store.requeue_stale(LEASE_S, now=t0 + timedelta(seconds=PUBLISH_GRACE_S + 1)) == 0


DISPATCHER = """
import json, sys, time
from batch.scheduler import dispatch
from batch.store import JobStore
from store.session import make_engine, make_sessionmaker
store = JobStore(make_sessionmaker(make_engine(sys.argv[1])))
def send(job_id, seq, priority, generation):
    print(json.dumps([job_id, seq, generation]), flush=True)
    time.sleep(3600)  # SIGKILLed here: between the dispatch's commit and the broker
dispatch(store, send, 1, 60)
"""


def test_a_dispatcher_sigkilled_before_the_broker_loses_no_chunk(mariadb_url):
    store = JobStore(make_sessionmaker(make_engine(mariadb_url)))
    jid = _job(store, 2)
    child = subprocess.Popen([sys.executable, "-c", DISPATCHER, mariadb_url], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        job_id, seq, generation = json.loads(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert (job_id, _chunks(store, jid)[seq]) == (jid, ("dispatched", 1, False))
    later = utcnow() + timedelta(seconds=PUBLISH_GRACE_S + 1)
    _busy_worker(store, later)  # other work in progress does not hold it back
    assert store.requeue_stale(LEASE_S, now=later) == 1
    sent = []
    assert dispatch(store, lambda *a: sent.append(a), 8, 60) >= 1
    assert [(a[1], a[3]) for a in sent if a[0] == jid] == [(seq, 2)]
    assert store.hold(jid, seq, generation) is False and store.hold(jid, seq, 2) is True


def test_a_refusal_never_takes_back_a_chunk_a_worker_holds(store):
    """The publish raised although the broker had the message (a lost confirm) and a worker
    already holds it: the chunk stays with that worker."""
    jid = _job(store, 2)
    [d] = store.take_dispatches(1, 60)
    assert store.hold(jid, d.seq, d.generation)
    store.undispatch([d])
    assert _chunks(store, jid)[0] == ("dispatched", 1, True)
    assert store.renew([(jid, d.seq, d.generation)]) == [True]


def test_a_chunk_lost_again_and_again_falls_back_to_the_lease_rule(store):
    from batch.store import MAX_FAST_RESENDS

    t0 = utcnow().replace(microsecond=0)
    jid = _job(store, 2)
    for k in range(1, MAX_FAST_RESENDS + 2):
        now = t0 + timedelta(seconds=100 * k)
        [d] = [x for x in store.take_dispatches(99, 60, now=now) if x.job_id == jid]
        assert d.generation == k
        _busy_worker(store, now + timedelta(seconds=PUBLISH_GRACE_S + 1))
        # a lease longer than the test, so only the unsent rule is at work
        n = store.requeue_stale(100 * LEASE_S, now=now + timedelta(seconds=PUBLISH_GRACE_S + 1))
        if k < MAX_FAST_RESENDS:
            assert n == 1
        else:  # no longer every few seconds: it waits for the lease like any chunk
            assert n == 0 and _chunks(store, jid)[0][0] == "dispatched"
            break


SEND = """
import sys, time
from batch.tasks import send
t0 = time.monotonic()
try:
    send("job", 0, 0, 1)
    print("sent", round(time.monotonic() - t0, 1))
except Exception as e:
    print("refused", round(time.monotonic() - t0, 1), type(e).__name__)
"""


def test_a_stalled_broker_refuses_the_publish_in_bounded_time(tmp_path):
    """A broker that takes the connection and never answers: the publish fails within
    seconds (the dispatcher then puts the chunk back), never a thread stuck for good."""
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy("127.0.0.1", 5672, delay_s=120)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BATCH_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
               "BATCH_QUEUE": "pcb-batch-stalled-test"}
        out = subprocess.run([sys.executable, "-c", SEND], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60).stdout.split()
    finally:
        proxy.close()
    assert out[0] == "refused" and float(out[1]) < 15, out


def test_rabbitmq_publishes_wait_for_the_brokers_confirm():
    """"Published" means RabbitMQ has it (publisher confirms), not that it left the socket."""
    amqp = configure(Celery("t"), Settings(batch_broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert amqp.conf.broker_transport_options["confirm_publish"] is True
    memory = configure(Celery("m"), Settings(batch_broker_url="memory://"))
    assert "confirm_publish" not in memory.conf.broker_transport_options


def test_concurrent_dispatchers_never_take_one_chunk_twice(store):
    """The gateway, every worker after each chunk and the sweeper all dispatch. On SQLite, which
    ignores FOR UPDATE, two of them could read the same queued chunk and both send it under one
    generation (two workers then ran its images: 164-172 inferences for 160 images under CPU
    load). The take is a write conditional on what was read, so each chunk goes out once."""
    import threading

    jid = _job(store, n=120, chunk=2)
    taken: list[tuple[str, int, int]] = []
    start = threading.Barrier(6)

    def dispatcher() -> None:
        start.wait()
        for _ in range(20):
            taken.extend((d.job_id, d.seq, d.generation) for d in store.take_dispatches(99, 60))

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [seq for job, seq, _ in taken if job == jid]
    assert len(seqs) == len(set(seqs)) == 60, sorted(seqs)
    assert all(gen == 1 for _, _, gen in taken)
    assert all(state == "dispatched" and n == 1 for state, n, _ in _chunks(store, jid).values())

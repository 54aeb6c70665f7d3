"""The batch engine distributed for real: a gateway (submits, dispatches) and Celery worker
processes over the machine's RabbitMQ, state in MariaDB, inference on the CPU Triton server.

Priority order, cancel, retry with backoff (Triton cut by a proxy), a worker killed mid-job
(and the gateway too), two workers sharing one job, bad files."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from batch.local_workers import RABBIT, Worker, rabbit_queue, wait_for
from batch.store import JobStore
from pcb.synthetic import render_board
from store.models import BatchChunk
from store.session import make_engine, make_sessionmaker
from tests.conftest import ROOT, encode, fresh_mariadb
from tests.gateway_server import GatewayServer
from tests.tcp_proxy import TcpProxy

WINDOW = 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    for i in range(120):
        (root / "boards" / f"{i // 40}").mkdir(parents=True, exist_ok=True)
        (root / "boards" / f"{i // 40}" / f"b{i:03d}.jpg").write_bytes(encode(render_board(500 + i).image))
    return root


@pytest.fixture(scope="module")
def env(triton, images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    with fresh_mariadb() as name, rabbit_queue("pcb-batch-test") as queue:
        yield {"DATABASE_URL": f"mysql+pymysql://root:@127.0.0.1:3306/{name}", "TRITON_URL": triton.grpc_url,
               "BATCH_BROKER_URL": RABBIT, "BATCH_QUEUE": queue, "BATCH_WINDOW": str(WINDOW),
               "BATCH_AGING_S": "3600", "BATCH_MAX_RETRIES": "2", "BATCH_DATA_DIR": str(tmp / "data"),
               "BATCH_ALLOWED_ROOTS": str(images), "OUTBOX_PATH": str(tmp / "outbox.db"),
               "IMAGE_DIR": str(tmp / "images"), "ENHANCE_DIR": str(tmp / "enhance"),
               "AUTH_MODE": "off"}  # access rules: tests/test_security.py


@pytest.fixture(scope="module")
def gateway(env, tmp_path_factory):
    gw = GatewayServer(env, tmp_path_factory.mktemp("gw") / "gateway.log").start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def store(env):
    return JobStore(make_sessionmaker(make_engine(env["DATABASE_URL"])))


@pytest.fixture
def workers(env, tmp_path):
    started: list[Worker] = []

    def start(concurrency: int = 1, **extra) -> Worker:
        w = Worker({**env, **extra}, tmp_path / f"worker{len(started)}.log", concurrency).start()
        started.append(w)
        return w
    yield start
    for w in started:
        w.stop()


def submit(gw, folder, priority="normal", chunk_size=2, name="") -> str:
    r = httpx.post(f"{gw.url}/api/v1/jobs", data={"source_dir": str(folder), "priority": priority,
                                                  "chunk_size": str(chunk_size), "name": name}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def finished(store, job_id, timeout=120):
    return wait_for(lambda: (p := store.progress(job_id))["state"] != "running" and p, timeout, 0.2,
                    f"job {job_id} to finish")


def test_urgent_job_overtakes_a_running_low_job(gateway, store, images, workers):
    """A LOW job is running (some of its items done) when an URGENT job arrives. Bound (the
    README's "Priority without starvation"): only the LOW chunks already dispatched then
    (at most the window, WINDOW chunks = WINDOW x 2 items) may finish before URGENT's first
    item, because URGENT takes every slot that frees while it has chunks queued. Counted from
    the database, so no clock resolution is involved."""
    workers(concurrency=1)
    low = submit(gateway, images / "boards", "low", name="archive")  # 120 items, 60 chunks
    wait_for(lambda: store.progress(low)["counts"]["completed"] >= 6, 60, 0.05, what="the LOW job running")
    urgent = submit(gateway, images / "boards" / "1", "urgent", name="rush")  # 40 items
    low_at_submit = store.progress(low)["counts"]["completed"]
    # no LOW chunk is dispatched while URGENT has chunks queued (20 of them, window 4), so a
    # late poll still counts only the LOW chunks dispatched before URGENT arrived
    wait_for(lambda: store.progress(urgent)["counts"]["completed"] >= 1, 60, 0.02, what="URGENT's first item")
    low_between = store.progress(low)["counts"]["completed"] - low_at_submit
    print("LOW items finished between URGENT's submission and its first item:", low_between)
    assert low_between <= WINDOW * 2, low_between
    pu = finished(store, urgent)
    assert store.progress(low)["counts"]["completed"] < 120  # overtaken, not merely after it
    pl = finished(store, low)
    assert pu["counts"]["completed"] == 40 and pl["counts"]["completed"] == 120
    assert pu["finished_at"] <= pl["finished_at"]


def test_cancel_stops_a_job_before_and_during_work(gateway, store, images, workers):
    jid = submit(gateway, images / "boards", "normal", chunk_size=4)  # 120 items
    r = httpx.post(f"{gateway.url}/api/v1/jobs/{jid}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    workers(concurrency=2)
    # the window's messages are delivered, but a cancelled job's chunks do nothing
    wait_for(lambda: all(c.state == "done" for c in _chunks(store, jid)), 30, what="chunks drained")
    p = store.progress(jid)
    assert p["counts"]["cancelled"] == 120 and p["counts"]["completed"] == 0


def _chunks(store, job_id):
    with store.sessions() as s:
        return list(s.scalars(select(BatchChunk).where(BatchChunk.job_id == job_id)))


def test_two_workers_share_one_job(gateway, store, images, workers):
    workers(concurrency=1)
    workers(concurrency=1)
    jid = submit(gateway, images / "boards" / "2", "high", chunk_size=2)
    p = finished(store, jid)
    items = store.items(jid)
    assert p["counts"]["completed"] == 40 == len({i.id for i in items if i.result})
    hosts = {i.worker.rsplit(":", 1)[0] for i in items}  # host:pid
    assert len(hosts) == 2, hosts


def test_killed_worker_and_gateway_lose_nothing_and_count_nothing_twice(gateway, store, images, workers):
    a = workers(concurrency=2)
    jid = submit(gateway, images / "boards", "normal", chunk_size=4)  # 120 items
    wait_for(lambda: store.progress(jid)["counts"]["completed"] >= 16, 60, 0.05, what="some progress")
    a.kill()  # mid-job: its unacknowledged chunks go back to the queue
    held = {i.id for i in store.items(jid, "processing")}
    gateway.stop()  # and the gateway goes down too
    b = workers(concurrency=2)
    try:
        p = finished(store, jid)
    finally:
        gateway.start()  # the module's other tests need it, whatever happened here
    assert httpx.get(f"{gateway.url}/api/v1/jobs/{jid}").json()["state"] == "completed"
    items = store.items(jid)
    assert p["counts"] == {"pending": 0, "processing": 0, "completed": 120, "failed": 0, "cancelled": 0}
    assert all(i.result and i.result["verdict"] for i in items)
    # what the killed worker held was done again by the other one, and counted once
    redone = [i for i in items if i.id in held]
    print("held by the killed worker:", len(held))
    assert all(i.attempts >= 2 for i in redone)
    workers_seen = {i.worker.rsplit(":", 1)[0] for i in items}
    assert len(workers_seen) == 2 and b.proc.poll() is None


def test_transient_triton_outage_is_retried_with_backoff_then_given_up(gateway, store, images, workers, triton):
    host, port = triton.grpc_url.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        workers(concurrency=1, TRITON_URL=f"127.0.0.1:{proxy.port}")
        proxy.cut()
        jid = submit(gateway, images / "boards" / "1", "urgent", chunk_size=20)  # 2 chunks
        wait_for(lambda: any(i.attempts >= 2 for i in store.items(jid)), 30, 0.2, what="a retry")
        proxy.restore()
        p = finished(store, jid)
        assert p["counts"]["completed"] == 40

        proxy.cut()
        jid = submit(gateway, images / "boards" / "0", "urgent", chunk_size=20)
        p = finished(store, jid, 60)  # 2 retries with backoff, then the items fail visibly
        assert p["counts"]["failed"] == 40
        assert all("gave up after 2 retries" in i.error for i in store.items(jid))
        proxy.restore()
        r = httpx.post(f"{gateway.url}/api/v1/jobs/{jid}/retry")
        assert r.status_code == 200 and r.json()["retried"] == 40
        assert finished(store, jid)["counts"]["completed"] == 40
    finally:
        proxy.close()


def test_bad_files_fail_alone_with_a_reason(gateway, store, workers, tmp_path):
    good = encode(render_board(7).image)
    files = [("files", ("ok1.jpg", good, "image/jpeg")), ("files", ("notes.jpg", b"hello", "image/jpeg")),
             ("files", ("cut.jpg", good[: len(good) // 3], "image/jpeg")), ("files", ("ok2.jpg", good, "image/jpeg"))]
    r = httpx.post(f"{gateway.url}/api/v1/jobs", files=files, data={"priority": "high"}, timeout=30)
    assert r.status_code == 201, r.text
    jid = r.json()["job_id"]
    workers(concurrency=1)
    p = finished(store, jid)
    assert p["state"] == "completed" and p["counts"]["completed"] == 2 and p["counts"]["failed"] == 2
    errors = {i.name: i.error for i in store.items(jid) if i.state == "failed"}
    assert errors["notes.jpg"].startswith("unsupported_image") and errors["cut.jpg"].startswith("invalid_image")



def test_broker_outage_delays_but_loses_nothing(env, store, images, workers, tmp_path):
    """RabbitMQ unreachable (a proxy cut, never the machine's service): the submission is
    stored and answered, the worker waits; when the broker is back the job completes."""
    proxy = TcpProxy("127.0.0.1", 5672)
    broker = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    gw = GatewayServer({**env, "BATCH_BROKER_URL": broker}, tmp_path / "gw-broker.log").start()
    try:
        workers(concurrency=1, BATCH_BROKER_URL=broker)
        proxy.cut()
        r = httpx.post(f"{gw.url}/api/v1/jobs", data={"source_dir": str(images / "boards" / "2"),
                                                      "priority": "high", "chunk_size": "4"}, timeout=60)
        assert r.status_code == 201, r.text
        jid = r.json()["job_id"]
        assert store.progress(jid)["counts"]["completed"] == 0
        proxy.restore()
        p = finished(store, jid, 180)  # the sweepers send it, the worker reconnects
        assert p["counts"] == {"pending": 0, "processing": 0, "completed": 40, "failed": 0, "cancelled": 0}
    finally:
        gw.stop()
        proxy.close()


def test_flower_shows_the_workers_and_the_queue(env, workers, tmp_path):
    """The operators' view documented in the README: Flower on the same Celery app."""
    import os
    import subprocess
    import sys

    from serving.cpu_server import free_port, wait_http

    w = workers(concurrency=1)
    port = free_port()
    log = open(tmp_path / "flower.log", "ab")
    flower = subprocess.Popen([sys.executable, "-m", "celery", "--app", "batch.celery_app", "flower",
                               f"--port={port}", "--address=127.0.0.1"], cwd=ROOT,
                              env={**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", 60, flower)
        seen = wait_for(lambda: [n for n in httpx.get(f"http://127.0.0.1:{port}/api/workers",
                                                      params={"refresh": "1"}, timeout=20).json()
                                 if str(w.proc.pid) in n], 60, 1.0, "the worker in Flower")
        assert seen[0].startswith("batch@")
        page = httpx.get(f"http://127.0.0.1:{port}/workers", timeout=20)
        assert page.status_code == 200 and "batch@" in page.text
    finally:
        os.killpg(flower.pid, 15)
        flower.wait(20)

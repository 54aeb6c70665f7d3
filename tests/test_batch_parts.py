"""Batch engine parts without servers: priority aging, memory rule, sources, store
semantics (idempotent writes, window, cancel, retry, leases), results, the tuner's search."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import pytest

from batch import results, sources
from batch.priority import Priority, broker_priority, effective_level
from batch.resources import Limits, MemoryGuard, Thresholds, adjust
from batch.store import Dispatch, JobStore
from batch.tuning import AutoTuner, Point
from store.migrate import upgrade
from store.models import utcnow
from store.session import make_engine, make_sessionmaker


@pytest.fixture
def store(tmp_path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    return JobStore(make_sessionmaker(make_engine(url)))


def _sent(store, *args, **kw):
    """Dispatches as the scheduler makes them: taken, then published to the broker."""
    taken = store.take_dispatches(*args, **kw)
    store.mark_published(taken)
    return taken


def _job(store, n=10, priority=Priority.NORMAL, chunk=4, **kw):
    return store.create_job([(f"/x/{i}.jpg", f"{i}.jpg") for i in range(n)], priority=priority, chunk_size=chunk, **kw)


def test_priority_parse_and_aging_rule():
    assert Priority.parse("High") is Priority.HIGH and Priority.parse(0) is Priority.LOW
    with pytest.raises(ValueError, match="urgent"):
        Priority.parse("asap")
    assert effective_level(Priority.LOW, 0, 60) == Priority.LOW
    assert effective_level(Priority.LOW, 119, 60) == Priority.NORMAL + 0 == 1
    assert effective_level(Priority.LOW, 10_000, 60) == Priority.URGENT  # capped
    assert [broker_priority(lv) for lv in Priority] == [0, 3, 6, 9]


def test_memory_rule_halves_the_batch_over_the_limit_and_recovers_when_calm():
    t = Thresholds(mem_limit_mb=1000)
    hot = adjust(Limits(16), 16, rss_mb=1200, t=t)
    assert hot.batch_size == 8
    assert adjust(hot, 16, rss_mb=1100, t=t).batch_size == 4
    assert adjust(Limits(1), 16, rss_mb=5000, t=t).batch_size == 1  # never below one image
    cur = hot
    for _ in range(3):  # three calm samples before one step up
        cur = adjust(cur, 16, rss_mb=300, t=t)
    assert cur.batch_size == 16
    assert adjust(Limits(8, calm=2), 16, rss_mb=900, t=t) == Limits(8, 0)  # in between: hold
    guard = MemoryGuard(8, thresholds=t)
    guard.sample(rss_mb=2000)
    assert guard.batch_size(8) == 4 and guard.batch_size(3) == 3 and guard.changes == 1


def test_store_counts_an_item_once_even_when_written_twice(store):
    jid = _job(store, 3, chunk=3)
    [d] = store.take_dispatches(window=8, aging_s=60)
    items = store.claim(jid, d.seq, "w1")
    assert len(items) == 3 and all(i.attempts == 1 for i in items)
    assert store.complete(items[0].id, {"verdict": "normal"}, 5.0) is True
    assert store.complete(items[0].id, {"verdict": "normal"}, 5.0) is False  # a redelivered task
    again = store.claim(jid, d.seq, "w2")  # the first worker died: the rest go to w2
    assert [i.id for i in again] == [items[1].id, items[2].id] and again[0].attempts == 2
    for it in again:
        store.complete(it.id, {"verdict": "normal"}, 5.0)
    store.finish_chunk(jid, d.seq)
    p = store.progress(jid)
    assert p["state"] == "completed" and p["counts"]["completed"] == 3 and p["eta_s"] == 0.0


def test_window_and_priority_order_with_aging(store):
    low = _job(store, 40, Priority.LOW, chunk=4)  # 10 chunks
    first = store.take_dispatches(window=4, aging_s=60)
    assert [d.job_id for d in first] == [low] * 4 and store.take_dispatches(4, 60) == []
    assert [d.generation for d in first] == [1] * 4
    urgent = _job(store, 8, Priority.URGENT, chunk=4)
    store.finish_chunk(low, first[0].seq)  # one slot frees up: the urgent job takes it
    [nxt] = store.take_dispatches(window=4, aging_s=60)
    assert nxt.job_id == urgent and nxt.level == Priority.URGENT
    # the low job has chunks in flight: however long it runs, it does not age
    later = utcnow() + timedelta(seconds=600)
    store.finish_chunk(low, first[1].seq, now=later)
    [again] = store.take_dispatches(window=4, aging_s=60, now=later)
    assert again.job_id == urgent


def _set(store, job_id, **values):
    from sqlalchemy import update

    from store.models import BatchJob

    with store.sessions.begin() as s:
        s.execute(update(BatchJob).where(BatchJob.id == job_id).values(**values))


def _chunks(store, job_id):
    from sqlalchemy import select

    from store.models import BatchChunk

    with store.sessions() as s:
        return {c.seq: c for c in s.scalars(select(BatchChunk).where(BatchChunk.job_id == job_id))}


def _work(store, d, now):
    """A worker does chunk ``d`` and ends it at ``now``."""
    for it in store.claim(d.job_id, d.seq, "w"):
        store.complete(it.id, {}, 1.0)
    assert store.finish_chunk(d.job_id, d.seq, d.generation, now=now)


def test_a_long_running_low_job_is_overtaken_by_new_urgent_work(store):
    """Bound (batch/priority.py): new URGENT work takes the next free slot, behind at
    most one chunk of each job aged to URGENT by 3 * aging_s with nothing in flight. A LOW
    job that has been running for 10 minutes is not such a job: it gets no slot at all."""
    aging = 60.0
    t0 = utcnow()
    low = _job(store, 200, Priority.LOW, chunk=4)  # 50 chunks
    _set(store, low, created_at=t0 - timedelta(minutes=10), started_at=t0 - timedelta(minutes=10))
    # ten minutes of work: a chunk every 30 s, the last two still in flight (leases renewed)
    for k in range(20):
        [d] = store.take_dispatches(window=1 if k < 19 else 2, aging_s=aging,
                                    now=t0 - timedelta(seconds=600 - 30 * k))
        if k < 18:
            _work(store, d, now=t0 - timedelta(seconds=590 - 30 * k))
            continue
        assert store.renew([(low, d.seq, d.generation)], now=t0 - timedelta(seconds=5)) == [True]
    # under the old rule (age from creation) this job would be URGENT-level and older than anything
    urgent = _job(store, 200, Priority.URGENT, chunk=4)
    _set(store, urgent, created_at=t0)
    got = store.take_dispatches(window=2 + 3, aging_s=aging, now=t0 + timedelta(seconds=1))
    assert [(d.job_id, d.level) for d in got] == [(urgent, Priority.URGENT)] * 3
    # the low job's two chunks end; it waits with nothing in flight, and until it has waited
    # 3 aging periods every slot that frees up is urgent's
    for seq in (18, 19):
        c = _chunks(store, low)[seq]
        _work(store, Dispatch(low, seq, 0, "inspect", c.dispatches), now=t0 + timedelta(seconds=2))
    for d in got:
        _work(store, d, now=t0 + timedelta(seconds=3))
    got = store.take_dispatches(window=5, aging_s=aging, now=t0 + timedelta(seconds=2 + 3 * aging - 1))
    assert [d.job_id for d in got] == [urgent] * 5
    for d in got:
        _work(store, d, now=t0 + timedelta(seconds=180))
    # the bound: once it has waited 3 * aging_s it gets one slot - one - and urgent the rest
    got = store.take_dispatches(window=5, aging_s=aging, now=t0 + timedelta(seconds=2 + 3 * aging))
    assert [(d.job_id, d.level) for d in got] == [(low, Priority.URGENT)] + [(urgent, Priority.URGENT)] * 4


def test_aging_still_prevents_starvation_under_a_stream_of_urgent_work(store):
    """A LOW job with nothing in flight reaches URGENT within 3 * aging_s and then gets the
    next free slot (one chunk: served, it drops back to LOW and waits again)."""
    aging, step, window = 60.0, 10.0, 2
    t0 = utcnow()
    low = _job(store, 12, Priority.LOW, chunk=4)  # 3 chunks
    _set(store, low, created_at=t0)
    low_slots: list[float] = []
    flying = []
    for k in range(1, 80):  # 790 simulated seconds, a new urgent job every 10 s
        now = t0 + timedelta(seconds=k * step)
        for d in flying:  # every chunk takes one step
            _work(store, d, now)
        urgent = _job(store, 8, Priority.URGENT, chunk=4)
        _set(store, urgent, created_at=now)
        flying = store.take_dispatches(window=window, aging_s=aging, now=now)
        assert len(flying) == window
        low_slots += [k * step for d in flying if d.job_id == low]
        assert all(d.level == Priority.URGENT for d in flying)
    # each low chunk waited 3 aging periods (+ the step in flight), then got exactly one slot
    assert low_slots == [180.0, 370.0, 560.0], low_slots
    assert store.progress(low)["state"] == "completed"


def test_leases_are_renewed_and_only_a_lapsed_one_is_resent(store):
    jid = _job(store, 4, chunk=4)
    [d] = store.take_dispatches(1, 60)
    t = utcnow()
    assert store.hold(jid, d.seq, d.generation) is True
    # a healthy chunk slower than the lease: its worker renews, the sweeper leaves it alone
    for k in range(1, 6):
        assert store.renew([(jid, d.seq, d.generation)], now=t + timedelta(seconds=200 * k)) == [True]
        assert store.requeue_stale(300, now=t + timedelta(seconds=200 * k + 250)) == 0
    # the worker dies: no more renewals, the lease lapses, the chunk is re-sent as generation 2
    assert store.requeue_stale(300, now=t + timedelta(seconds=1000 + 301)) == 1
    assert store.hold(jid, d.seq, d.generation) is False  # taken back: the old message is stale
    [d2] = store.take_dispatches(1, 60)
    assert (d2.seq, d2.generation) == (d.seq, 2)
    assert store.renew([(jid, d.seq, 1), (jid, d.seq, 2)]) == [False, True]
    assert store.finish_chunk(jid, d.seq, generation=1) is False  # the superseded worker ends nothing
    assert _chunks(store, jid)[d.seq].state == "dispatched"
    assert store.finish_chunk(jid, d.seq, generation=2) is True
    assert _chunks(store, jid)[d.seq].state == "queued"  # its items are still pending: round again


def test_a_chunk_finished_while_its_lease_is_renewed_is_not_lost(store):
    """The lease keeper may renew between the chunk's last transaction and its worker letting
    go: that chunk is done, not re-sent, and must not be reported lost."""
    from sqlalchemy import update

    from store.models import BatchChunk

    jid = _job(store, 1, chunk=1)
    [d] = store.take_dispatches(1, 60)
    assert store.hold(jid, d.seq, d.generation) is True
    with store.sessions.begin() as s:
        s.execute(update(BatchChunk).where(BatchChunk.job_id == jid).values(state="done"))
    assert store.renew([(jid, d.seq, d.generation)], done_is_held=True) == [True]
    assert store.renew([(jid, d.seq, d.generation + 1)], done_is_held=True) == [False]  # not this delivery's
    assert store.hold(jid, d.seq, d.generation) is False  # a late duplicate delivery still does nothing


def test_cancel_job_item_and_retry_failed(store):
    jid = _job(store, 8, chunk=4)
    d = store.take_dispatches(1, 60)[0]
    claimed = store.claim(jid, d.seq, "w")
    store.fail(claimed[0].id, "unreadable: file not found")
    pending = store.items(jid, "pending")
    assert store.cancel_item(jid, pending[0].id) is True
    assert store.cancel_item(jid, claimed[1].id) is False  # already in a worker's hands
    store.cancel_job(jid)
    assert store.claim(jid, 1, "w") == []  # a cancelled job's chunk does nothing
    for it in claimed[1:]:
        store.complete(it.id, {}, 1.0)
    store.finish_chunk(jid, d.seq)
    p = store.progress(jid)
    assert p["state"] == "cancelled" and p["counts"] == {"pending": 0, "processing": 0, "completed": 3,
                                                          "failed": 1, "cancelled": 4}
    jid2 = _job(store, 4, chunk=4)
    d2 = [d for d in store.take_dispatches(1, 60) if d.job_id == jid2][0]
    for it in store.claim(jid2, d2.seq, "w"):
        store.fail(it.id, "transient")
    store.finish_chunk(jid2, d2.seq)
    assert store.progress(jid2)["state"] == "completed"
    assert store.retry_failed(jid2) == 4
    assert store.progress(jid2)["state"] == "running" and store.items(jid2, "pending")
    assert [d.job_id for d in store.take_dispatches(1, 60)] == [jid2]


def test_a_chunk_finished_a_moment_ago_is_life_for_the_one_still_waiting(store):
    """Between one chunk's end and the next one's claim no chunk is started: the worker that
    just finished is alive, so the chunk waiting behind it is not re-sent (a duplicate)."""
    done_job = _job(store, 2, chunk=2)
    _job(store, 2, chunk=2)  # its chunk waits in the broker behind the first
    t = utcnow()
    a, _ = _sent(store, 2, 60, now=t - timedelta(seconds=400))
    store.claim(done_job, a.seq, "w1")
    store.finish_items([(it.id, "completed", {"verdict": "normal"}, None, 1.0) for it in store.items(done_job)])
    assert store.finish_chunk(done_job, a.seq, a.generation, now=t) is True
    assert store.requeue_stale(300, now=t + timedelta(seconds=100)) == 0  # finished 100 s ago: alive
    assert store.requeue_stale(300, now=t + timedelta(seconds=301)) == 1  # no life for a lease: re-sent


def test_stale_chunks_are_requeued_and_poison_chunks_fail(store):
    jid = _job(store, 4, chunk=4)
    [d] = _sent(store, 1, 60)
    store.claim(jid, d.seq, "w1")  # started, then its worker goes silent
    assert store.requeue_stale(lease_s=300) == 0
    assert store.requeue_stale(lease_s=300, now=utcnow() + timedelta(seconds=301)) == 1
    for _ in range(2):  # each delivery kills its worker
        [d] = _sent(store, 1, 60)
        store.claim(jid, d.seq, "w")
        store.requeue_stale(lease_s=0, max_attempts=3)
    p = store.progress(jid)
    assert p["state"] == "completed" and p["counts"]["failed"] == 4
    assert "gave up after 3 attempts" in store.items(jid)[0].error


def test_a_chunk_waiting_in_the_broker_is_resent_only_when_no_worker_shows_life(store):
    busy, waiting = _job(store, 4, chunk=4), _job(store, 4, chunk=4)
    a, b = _sent(store, 2, 60)
    assert (a.job_id, b.job_id) == (busy, waiting)
    t = utcnow()
    store.claim(busy, a.seq, "w1")  # the only worker is on the first chunk; the second waits behind it
    for k in range(1, 4):  # ... for a long time, while the worker renews its own lease
        store.renew([(busy, a.seq, a.generation)], now=t + timedelta(seconds=200 * k))
        assert store.requeue_stale(300, now=t + timedelta(seconds=200 * k + 100)) == 0
    # the worker dies: one lease later both go again. The started chunk is picked up and kills
    # its next worker too, so it fails at its second attempt; the one that never started is
    # re-sent each lease while no worker shows life, and never counts as an attempt
    resent = []
    for k in range(1, 10):
        now = t + timedelta(seconds=600 + 301 * k)
        resent.append(store.requeue_stale(300, max_attempts=2, now=now))
        for d in _sent(store, 2, 60, now=now):
            if d.job_id == busy:
                store.claim(busy, d.seq, f"w{k + 1}")
    assert resent == [2, 2] + [1] * 7
    assert store.progress(busy)["counts"]["failed"] == 4
    assert {(i.state, i.attempts) for i in store.items(waiting)} == {("pending", 0)}


def test_empty_job_is_complete_at_once(store):
    assert store.progress(store.create_job([], priority=1, chunk_size=4))["state"] == "completed"


def test_sources_dir_and_defensive_zip(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG", "notes.txt", ".hidden.jpg"):
        (tmp_path / "in" / name).write_bytes(b"x")
    assert [n for _, n in sources.from_dir(tmp_path / "in")] == ["a.jpg", "sub/b.PNG"]
    assert len(sources.from_dir(tmp_path / "in", all_files=True)) == 3

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.jpg", b"x")
        z.writestr("/abs.jpg", b"x")
        z.writestr("ok/c.jpg", b"y")
    out = sources.extract_zip(evil, tmp_path / "x", max_members=10, max_bytes=1000)
    assert [n for _, n in out] == ["ok/c.jpg"] and not (tmp_path / "escape.jpg").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.jpg", b"\0" * 5_000_000)
    with pytest.raises(sources.SourceError) as e:
        sources.extract_zip(bomb, tmp_path / "y", max_members=10, max_bytes=1_000_000)
    assert e.value.code == "archive_too_large"
    (tmp_path / "notzip.zip").write_bytes(b"PK nope")
    with pytest.raises(sources.SourceError, match="not a readable ZIP"):
        sources.extract_zip(tmp_path / "notzip.zip", tmp_path / "z", 10, 1000)


def test_uploads_expand_zips_and_respect_limits(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("d/1.jpg", b"1")
        z.writestr("d/2.jpg", b"2")
    items = sources.save_uploads([("one.jpg", io.BytesIO(b"0")), ("set.zip", io.BytesIO(buf.getvalue()))],
                                 tmp_path / "job", max_items=10, max_bytes=10_000)
    assert [n for _, n in items] == ["one.jpg", "set/d/1.jpg", "set/d/2.jpg"]
    with pytest.raises(sources.SourceError, match="more than 2"):
        sources.save_uploads([(f"{i}.jpg", io.BytesIO(b"0")) for i in range(3)], tmp_path / "j2", 2, 10_000)
    assert sources.inside(tmp_path / "job", [str(tmp_path)]) and not sources.inside("/etc", [str(tmp_path)])


def test_results_summary_csv_and_report(store):
    jid = _job(store, 3, chunk=3)
    store.take_dispatches(1, 60)
    a, b, c = store.claim(jid, 0, "w")
    store.complete(a.id, {"verdict": "normal", "verdict_label": "정상", "defects": []}, 4.0)
    store.complete(b.id, {"verdict": "solder_defect", "verdict_label": "x",
                          "defects": [{"class": "cold_joint", "score": 0.9, "box": [0, 0, 1, 1]}]}, 6.0)
    store.fail(c.id, "invalid_image: truncated")
    store.finish_chunk(jid, 0)
    p, items = store.progress(jid), store.items(jid)
    s = results.summary(p, items)
    assert s["verdicts"] == {"normal": 1, "solder_defect": 1} and s["defect_rate"] == 0.5
    assert s["classes"] == {"cold_joint": 1} and s["failure_reasons"] == {"invalid_image": 1}
    csv_text = results.to_csv(items)
    assert csv_text.splitlines()[0].startswith("seq,name,state,verdict") and "cold_joint" in csv_text
    assert json.loads(results.to_json(p, items))["summary"]["items"] == 3
    html = results.report_html(p, s)
    assert "<svg" in html and "cold_joint" in html and "정상" in html


class _FakeTuner(AutoTuner):
    """Throughput surface with one peak at (8, 3) — the search must climb to it."""

    def point(self, b, c):
        rate = 100 - 10 * abs(self.batch_sizes.index(b) - 3) - 8 * abs(self.concurrencies.index(c) - 2)
        self.points.setdefault((b, c), Point(b, c, rate))
        return self.points[(b, c)]


def test_tuner_climbs_to_the_peak_in_fewer_points_than_a_sweep():
    t = _FakeTuner(lambda b, c, n: 0.0)
    best = t.tune(start=(1, 1))
    assert (best.batch_size, best.concurrency) == (8, 3)
    assert len(t.points) < len(t.batch_sizes) * len(t.concurrencies)
    assert _FakeTuner(lambda b, c, n: 0.0).sweep() == best


def test_a_client_key_names_one_job_only(store):
    from sqlalchemy.exc import IntegrityError

    jid = _job(store, 2, client_key="k1")
    assert store.find_by_key("k1") == jid and store.find_by_key("k2") is None
    with pytest.raises(IntegrityError):  # the API turns this race into "here is your job"
        _job(store, 2, client_key="k1")


def test_a_stale_delivery_does_nothing_and_a_lost_lease_stops_the_worker(store, tmp_path, monkeypatch):
    """Through the worker's own code (``Runtime.run_chunk``) with a recording processor: a
    message superseded by a re-send claims nothing; a worker whose lease is lost mid-chunk
    stops before its next Triton batch and leaves the chunk to the new holder."""
    import cv2
    import numpy as np

    from batch import runner
    from settings.environment import Settings

    calls: list[list[str]] = []
    resend: list = []

    class Recording:
        def run(self, payloads, names, job_dir):
            calls.append(list(names))
            if resend:
                resend.pop()()
            return [{"verdict": "normal"} for _ in payloads]

    monkeypatch.setattr(runner, "make_processor", lambda kind, triton, options=None: Recording())
    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))
    files = []
    for i in range(4):
        (tmp_path / f"{i}.jpg").write_bytes(jpg.tobytes())
        files.append((str(tmp_path / f"{i}.jpg"), f"{i}.jpg"))
    settings = Settings(batch_chunk_size=2, batch_concurrency=1, batch_lease_s=300,
                        batch_data_dir=str(tmp_path / "data"))
    rt = runner.Runtime(settings, lambda *a: None, store)
    rt.refill = lambda: 0

    jid = store.create_job(files, priority=1, chunk_size=4)
    [d1] = store.take_dispatches(1, 60)
    store.requeue_stale(0)  # its lease lapsed: re-sent as generation 2
    [d2] = store.take_dispatches(1, 60)
    rt.run_chunk(jid, d1.seq, d1.generation)  # the old message arrives late
    assert calls == [] and {i.state for i in store.items(jid)} == {"pending"}
    assert all(i.attempts == 0 for i in store.items(jid))
    rt.run_chunk(jid, d2.seq, d2.generation)
    assert calls == [["0.jpg", "1.jpg"], ["2.jpg", "3.jpg"]]
    assert [(i.state, i.attempts) for i in store.items(jid)] == [("completed", 1)] * 4
    assert store.progress(jid)["state"] == "completed"

    calls.clear()
    jid = store.create_job(files, priority=1, chunk_size=4)
    [d] = store.take_dispatches(1, 60)

    def taken_over():  # while the first Triton batch runs, the chunk is re-sent elsewhere
        store.requeue_stale(0)
        assert store.take_dispatches(1, 60)[0].generation == 2
        rt.leases.renew_now()
    resend.append(taken_over)
    rt.run_chunk(jid, d.seq, d.generation)
    assert calls == [["0.jpg", "1.jpg"]]  # stopped before the second batch
    assert [i.state for i in store.items(jid)] == ["completed", "completed", "processing", "processing"]
    assert _chunks(store, jid)[d.seq].state == "dispatched"  # the new holder finishes it


def test_source_dirs_follow_no_symlink_and_obey_the_item_limit(tmp_path):
    root, outside = tmp_path / "allowed", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"\xff\xd8secret")
    (root / "a.jpg").write_bytes(b"\xff\xd8a")
    (root / "link.jpg").symlink_to(outside / "x.jpg")  # a file link out of the root
    (root / "sub").symlink_to(outside, target_is_directory=True)  # a folder link out of it
    assert [n for _, n in sources.from_dir(root)] == ["a.jpg"]
    for i in range(5):
        (root / f"b{i}.jpg").write_bytes(b"\xff\xd8b")
    with pytest.raises(sources.SourceError) as e:
        sources.from_dir(root, max_items=3)
    assert e.value.code == "too_many_items"


def test_csv_cells_cannot_become_formulas():
    from types import SimpleNamespace

    item = SimpleNamespace(seq=0, name="=HYPERLINK(\"http://x\")", state="failed", result=None, duration_ms=None,
                           attempts=1, worker="@w", error="+1-2")
    rows = list(csv.DictReader(io.StringIO(results.to_csv([item]))))
    assert rows[0]["name"].startswith("'=") and rows[0]["worker"] == "'@w" and rows[0]["error"] == "'+1-2"


def test_a_worker_process_never_imports_the_http_app():
    import subprocess
    import sys

    code = ("import sys, batch.tasks, batch.runner, batch.__main__\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')\n"
            "                      or m.startswith(('gateway.api', 'gateway.services', 'gateway.main')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", out


def test_a_chunks_results_and_its_end_are_one_write_and_only_its_holder_ends_it(store):
    jid = _job(store, 4, chunk=4)
    [d] = store.take_dispatches(1, 60)
    items = store.claim(jid, d.seq, "w1")
    store.requeue_stale(0)  # re-sent meanwhile: generation 2 is the holder now
    [d2] = store.take_dispatches(1, 60)
    rows = [(items[0].id, "completed", {"verdict": "normal"}, None, 5.0), (items[1].id, "failed", None, "x: y", None)]
    ended, applied = store.finish_chunk_with(jid, d.seq, d.generation, rows)
    assert ended is False and applied == [True, True]  # the answers are kept, the chunk is not ended
    assert _chunks(store, jid)[d.seq].state == "dispatched"
    rest = [(it.id, "completed", {"verdict": "normal"}, None, 5.0) for it in store.claim(jid, d.seq, "w2")]
    ended, applied = store.finish_chunk_with(jid, d2.seq, d2.generation, rows + rest)
    assert ended is True and applied == [False, False, True, True]  # nothing written twice
    assert _chunks(store, jid)[d.seq].state == "done" and store.progress(jid)["state"] == "completed"

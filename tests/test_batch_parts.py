"""Batch engine parts without servers: priority aging, resource rule, sources, store
semantics (idempotent writes, window, cancel, retry, leases), results, the tuner's search."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import pytest

from gateway.batch import results, sources
from gateway.batch.priority import Priority, broker_priority, effective_level
from gateway.batch.resources import Limits, adjust
from gateway.batch.store import JobStore
from gateway.batch.tuning import AutoTuner, Point
from gateway.db.migrate import upgrade
from gateway.db.models import utcnow
from gateway.db.session import make_engine, make_sessionmaker


@pytest.fixture
def store(tmp_path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    return JobStore(make_sessionmaker(make_engine(url)))


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


def test_resource_rule_halves_under_pressure_and_recovers_when_calm():
    target = Limits(16, 4)
    hot = adjust(target, target, cpu=95, mem=50)
    assert (hot.batch_size, hot.concurrency) == (8, 2)
    assert adjust(hot, target, cpu=50, mem=90).batch_size == 4  # memory alone is enough
    cur = hot
    for _ in range(3):  # three calm samples before one step up
        cur = adjust(cur, target, cpu=20, mem=40)
    assert (cur.batch_size, cur.concurrency) == (16, 3)
    assert adjust(cur, target, cpu=80, mem=40).calm == 0  # in between: hold


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
    urgent = _job(store, 8, Priority.URGENT, chunk=4)
    store.finish_chunk(low, first[0].seq)  # one slot frees up: the urgent job takes it
    [nxt] = store.take_dispatches(window=4, aging_s=60)
    assert nxt.job_id == urgent and nxt.level == Priority.URGENT
    # a low job that waited 3 aging periods is level with urgent work, and older: it goes first
    later = utcnow() + timedelta(seconds=181)
    store.finish_chunk(low, first[1].seq)
    [aged] = store.take_dispatches(window=4, aging_s=60, now=later)
    assert aged.job_id == low and aged.level == Priority.URGENT


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


def test_stale_chunks_are_requeued_and_poison_chunks_fail(store):
    jid = _job(store, 4, chunk=4)
    store.take_dispatches(1, 60)
    assert store.requeue_stale(lease_s=300) == 0
    assert store.requeue_stale(lease_s=300, now=utcnow() + timedelta(seconds=301)) == 1
    for _ in range(2):
        store.take_dispatches(1, 60)
        store.requeue_stale(lease_s=0, max_dispatches=3)
    store.take_dispatches(1, 60)  # third delivery
    store.requeue_stale(lease_s=0, max_dispatches=3)
    p = store.progress(jid)
    assert p["state"] == "completed" and p["counts"]["failed"] == 4
    assert "gave up after 3 deliveries" in store.items(jid)[0].error


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

"""Job, chunk and item state in the gateway's database (sync SQLAlchemy; the gateway calls it
from a thread pool, workers call it directly).

Every write that a redelivered task could repeat is conditional on the row's current state,
so doing it twice changes nothing: an item completes once, counts come from item states.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from gateway.batch.priority import effective_level
from gateway.db.models import BatchChunk, BatchItem, BatchJob, utcnow

ITEM_STATES = ("pending", "processing", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
RATE_WINDOW_S = 30.0


class JobNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Claimed:
    id: int
    source: str
    name: str
    attempts: int


@dataclass(frozen=True)
class Dispatch:
    job_id: str
    seq: int
    level: int  # effective priority level when dispatched
    kind: str


class JobStore:
    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    # -- creating and reading ------------------------------------------------------------
    def create_job(self, sources: Iterable[tuple[str, str]], *, priority: int, chunk_size: int,
                   kind: str = "inspect", name: str = "", options: dict | None = None,
                   job_id: str | None = None, client_key: str | None = None, client_fingerprint: str | None = None,
                   state: str = "running") -> str:
        """Raises sqlalchemy IntegrityError when ``client_key`` is already taken. A job in any
        state but "running" is never scheduled (the tuner's probe jobs)."""
        job_id = job_id or str(uuid.uuid4())
        now = utcnow()
        rows = list(sources)
        chunk_size = max(1, int(chunk_size))
        with self.sessions.begin() as s:
            s.add(BatchJob(id=job_id, name=name[:255], kind=kind, priority=int(priority), state=state,
                           total=len(rows), chunk_size=chunk_size, options=options or {}, created_at=now,
                           client_key=client_key, client_fingerprint=client_fingerprint))
            s.flush()
            s.add_all(BatchItem(job_id=job_id, seq=i, chunk=i // chunk_size, source=src, name=nm[:512],
                                state="pending") for i, (src, nm) in enumerate(rows))
            s.add_all(BatchChunk(job_id=job_id, seq=c, state="queued")
                      for c in range((len(rows) + chunk_size - 1) // chunk_size))
        if not rows:
            self._maybe_finish(job_id)
        return job_id

    def job(self, job_id: str) -> BatchJob:
        with self.sessions() as s:
            job = s.get(BatchJob, job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job

    def delete_job(self, job_id: str) -> None:
        with self.sessions.begin() as s:
            for table in (BatchItem, BatchChunk):
                s.execute(delete(table).where(table.job_id == job_id))
            s.execute(delete(BatchJob).where(BatchJob.id == job_id))

    def find_by_key(self, client_key: str) -> str | None:
        found = self.find_keyed(client_key)
        return found[0] if found else None

    def find_keyed(self, client_key: str) -> tuple[str, str | None] | None:
        """(job id, submission fingerprint) of the job created under ``client_key``."""
        with self.sessions() as s:
            row = s.execute(select(BatchJob.id, BatchJob.client_fingerprint)
                            .where(BatchJob.client_key == client_key)).first()
            return (row[0], row[1]) if row else None

    def jobs(self, limit: int = 50) -> list[BatchJob]:
        with self.sessions() as s:
            return list(s.scalars(select(BatchJob).order_by(BatchJob.created_at.desc()).limit(limit)))

    def items(self, job_id: str, state: str | None = None, offset: int = 0, limit: int | None = None
              ) -> list[BatchItem]:
        with self.sessions() as s:
            q = select(BatchItem).where(BatchItem.job_id == job_id)
            if state:
                q = q.where(BatchItem.state == state)
            q = q.order_by(BatchItem.seq).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q))

    def progress(self, job_id: str, now: datetime | None = None) -> dict:
        now = now or utcnow()
        job = self.job(job_id)
        with self.sessions() as s:
            counts = dict.fromkeys(ITEM_STATES, 0)
            for state, n in s.execute(select(BatchItem.state, func.count()).where(BatchItem.job_id == job_id)
                                      .group_by(BatchItem.state)):
                counts[state] = n
            since = now - timedelta(seconds=RATE_WINDOW_S)
            recent = s.scalar(select(func.count()).where(BatchItem.job_id == job_id,
                                                         BatchItem.finished_at >= since)) or 0
        done = counts["completed"] + counts["failed"]
        end = job.finished_at or now
        elapsed = (end - job.started_at).total_seconds() if job.started_at else 0.0
        if job.finished_at:
            rate = done / elapsed if elapsed > 0 else 0.0
        else:
            window = min(RATE_WINDOW_S, elapsed) if elapsed > 0 else 0.0
            rate = recent / window if window > 0 else 0.0
        remaining = counts["pending"] + counts["processing"]
        eta = remaining / rate if rate > 0 and remaining else (0.0 if not remaining else None)
        return {"job_id": job.id, "name": job.name, "kind": job.kind, "state": job.state,
                "priority": job.priority, "total": job.total, "counts": counts,
                "percent": round(100.0 * (job.total - remaining) / job.total, 1) if job.total else 100.0,
                "items_per_s": round(rate, 2), "eta_s": None if eta is None else round(eta, 1),
                "elapsed_s": round(elapsed, 2), "chunk_size": job.chunk_size,
                "created_at": job.created_at.isoformat() + "Z",
                "started_at": job.started_at.isoformat() + "Z" if job.started_at else None,
                "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None}

    def totals(self) -> tuple[dict, dict]:
        """Jobs per state and items per state over all jobs (for /metrics)."""
        with self.sessions() as s:
            jobs = dict(s.execute(select(BatchJob.state, func.count()).group_by(BatchJob.state)).all())
            items = dict(s.execute(select(BatchItem.state, func.count()).group_by(BatchItem.state)).all())
        return jobs, items

    # -- scheduling -------------------------------------------------------------------------
    def take_dispatches(self, window: int, aging_s: float, now: datetime | None = None) -> list[Dispatch]:
        """Mark up to ``window - in flight`` queued chunks dispatched, most urgent job first."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            in_flight = s.scalar(select(func.count()).select_from(BatchChunk)
                                 .where(BatchChunk.state == "dispatched")) or 0
            free = window - in_flight
            if free <= 0:
                return []
            waiting = s.execute(
                select(BatchJob.id, BatchJob.priority, BatchJob.created_at, BatchJob.kind)
                .where(BatchJob.state == "running",
                       select(BatchChunk.seq).where(BatchChunk.job_id == BatchJob.id,
                                                    BatchChunk.state == "queued").exists())).all()
            ranked = sorted(((effective_level(p, (now - created).total_seconds(), aging_s), created, jid, kind)
                             for jid, p, created, kind in waiting), key=lambda r: (-r[0], r[1]))
            out: list[Dispatch] = []
            for level, _, jid, kind in ranked:
                if free <= 0:
                    break
                chunks = list(s.scalars(select(BatchChunk).where(BatchChunk.job_id == jid,
                                                                 BatchChunk.state == "queued")
                                        .order_by(BatchChunk.seq).limit(free)
                                        .with_for_update(skip_locked=True)))
                for c in chunks:
                    c.state, c.dispatched_at, c.dispatches = "dispatched", now, c.dispatches + 1
                    out.append(Dispatch(jid, c.seq, level, kind))
                free -= len(chunks)
                s.execute(update(BatchJob).where(BatchJob.id == jid, BatchJob.started_at.is_(None))
                          .values(started_at=now))
            return out

    def undispatch(self, d: Dispatch) -> None:
        """The broker refused the message: the chunk goes back to the queue."""
        with self.sessions.begin() as s:
            s.execute(update(BatchChunk).where(BatchChunk.job_id == d.job_id, BatchChunk.seq == d.seq,
                                               BatchChunk.state == "dispatched").values(state="queued"))

    def requeue_stale(self, lease_s: float, max_dispatches: int = 5, now: datetime | None = None) -> int:
        """Chunks dispatched over ``lease_s`` ago and still unfinished go back to the queue
        (their message was lost with an in-memory broker, or a worker hangs); a duplicate is
        harmless because item writes are idempotent. A chunk sent ``max_dispatches`` times
        fails its open items instead (a poison chunk must not loop forever).
        ``lease_s=0`` requeues everything in flight (an in-memory broker after a restart)."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=lease_s)
        with self.sessions.begin() as s:
            stale = list(s.scalars(select(BatchChunk).where(BatchChunk.state == "dispatched",
                                                            BatchChunk.dispatched_at <= cutoff)
                                   .with_for_update(skip_locked=True)))
            poisoned = []
            for c in stale:
                if c.dispatches >= max_dispatches:
                    c.state = "done"
                    poisoned.append(c)
                    s.execute(update(BatchItem).where(BatchItem.job_id == c.job_id, BatchItem.chunk == c.seq,
                                                      BatchItem.state.in_(("pending", "processing")))
                              .values(state="failed", finished_at=now,
                                      error=f"gave up after {c.dispatches} deliveries"))
                else:
                    c.state = "queued"
        for c in poisoned:
            self._maybe_finish(c.job_id)
        return len(stale)

    # -- the worker's side -----------------------------------------------------------------
    def claim(self, job_id: str, seq: int, worker: str) -> list[Claimed]:
        """Items of a chunk to work on: pending ones and ones a dead worker left processing.
        Empty when the job was cancelled or the chunk is already done."""
        with self.sessions.begin() as s:
            job = s.get(BatchJob, job_id)
            if job is None or job.state == "cancelled":
                return []
            where = (BatchItem.job_id == job_id, BatchItem.chunk == seq,
                     BatchItem.state.in_(("pending", "processing")))
            s.execute(update(BatchItem).where(*where)
                      .values(state="processing", worker=worker[:128], attempts=BatchItem.attempts + 1))
            return [Claimed(i.id, i.source, i.name, i.attempts)
                    for i in s.scalars(select(BatchItem).where(*where).order_by(BatchItem.seq))]

    def complete(self, item_id: int, result: dict, duration_ms: float) -> bool:
        return self.finish_items([(item_id, "completed", result, None, duration_ms)]) == [True]

    def fail(self, item_id: int, error: str, duration_ms: float | None = None) -> bool:
        return self.finish_items([(item_id, "failed", None, error, duration_ms)]) == [True]

    def finish_items(self, outcomes: list[tuple[int, str, dict | None, str | None, float | None]]) -> list[bool]:
        """(item id, completed/failed, result, error, ms) for a whole Triton batch in one
        transaction; each write only applies to an unfinished item. Returns which applied."""
        now, applied = utcnow(), []
        with self.sessions.begin() as s:
            for item_id, state, result, error, ms in outcomes:
                applied.append(1 == s.execute(update(BatchItem)
                               .where(BatchItem.id == item_id, BatchItem.state.in_(("pending", "processing")))
                               .values(state=state, finished_at=now, result=result,
                                       error=None if error is None else error[:2000], duration_ms=ms)).rowcount)
        return applied

    def release(self, job_id: str, seq: int) -> None:
        """A transient failure: the chunk's unfinished items wait for the retry."""
        with self.sessions.begin() as s:
            s.execute(update(BatchItem).where(BatchItem.job_id == job_id, BatchItem.chunk == seq,
                                              BatchItem.state == "processing").values(state="pending"))

    def finish_chunk(self, job_id: str, seq: int) -> None:
        with self.sessions.begin() as s:
            # an item retried while its chunk was in flight sends the chunk round again
            left = s.scalar(select(func.count()).where(BatchItem.job_id == job_id, BatchItem.chunk == seq,
                                                       BatchItem.state == "pending"))
            s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq)
                      .values(state="queued" if left else "done"))
        self._maybe_finish(job_id)

    def _maybe_finish(self, job_id: str) -> None:
        with self.sessions.begin() as s:
            open_items = s.scalar(select(func.count()).where(BatchItem.job_id == job_id,
                                                             BatchItem.state.not_in(FINAL)))
            if not open_items:
                now = utcnow()
                s.execute(update(BatchJob).where(BatchJob.id == job_id, BatchJob.state == "running")
                          .values(state="completed", finished_at=now,
                                  started_at=func.coalesce(BatchJob.started_at, now)))

    # -- operator actions --------------------------------------------------------------------
    def cancel_job(self, job_id: str) -> None:
        """Pending items are cancelled; items already in a worker's hands finish."""
        self.job(job_id)
        now = utcnow()
        with self.sessions.begin() as s:
            s.execute(update(BatchItem).where(BatchItem.job_id == job_id, BatchItem.state == "pending")
                      .values(state="cancelled", finished_at=now))
            s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.state == "queued")
                      .values(state="done"))
            s.execute(update(BatchJob).where(BatchJob.id == job_id, BatchJob.state == "running")
                      .values(state="cancelled", finished_at=now))

    def cancel_item(self, job_id: str, item_id: int) -> bool:
        self.job(job_id)
        with self.sessions.begin() as s:
            n = s.execute(update(BatchItem).where(BatchItem.job_id == job_id, BatchItem.id == item_id,
                                                  BatchItem.state == "pending")
                          .values(state="cancelled", finished_at=utcnow())).rowcount
        self._maybe_finish(job_id)
        return n == 1

    def retry_failed(self, job_id: str) -> int:
        """Failed items go back to pending and their chunks to the queue."""
        self.job(job_id)
        with self.sessions.begin() as s:
            chunks = set(s.scalars(select(BatchItem.chunk).where(BatchItem.job_id == job_id,
                                                                 BatchItem.state == "failed")))
            if not chunks:
                return 0
            n = s.execute(update(BatchItem).where(BatchItem.job_id == job_id, BatchItem.state == "failed")
                          .values(state="pending", error=None, finished_at=None)).rowcount
            s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq.in_(chunks),
                                               BatchChunk.state == "done").values(state="queued"))
            s.execute(update(BatchJob).where(BatchJob.id == job_id)
                      .values(state="running", finished_at=None))
        return n

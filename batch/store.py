"""Job, chunk and item state in the gateway's database (sync SQLAlchemy; the gateway calls it
from a thread pool, workers call it directly).

Every write that a redelivered task could repeat is conditional on the row's current state,
so doing it twice changes nothing: an item completes once, counts come from item states.

Leases: ``batch_chunks.dispatched_at`` is when the chunk was last known held - dispatched,
renewed by the worker on it (``renew``, every third of ``BATCH_LEASE_S``), or finished. The
sweeper takes back only chunks whose lease really lapsed (``requeue_stale``). Each dispatch
is a new *generation* (``batch_chunks.dispatches``) carried in the message, so a message
that was superseded by a re-send (``hold`` says False) does nothing at all, and a worker
that lost its lease stops instead of doing the chunk a second time beside its new holder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import sessionmaker

from batch.priority import effective_level, rank_key
from store.models import BatchChunk, BatchItem, BatchJob, utcnow

ITEM_STATES = ("pending", "processing", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
RATE_WINDOW_S = 30.0
# a dispatch still unpublished this long after its commit lost its dispatcher (a publish
# takes milliseconds; a refused one at most its timeout, tasks.PUBLISH_TIMEOUT_S = 5 s)
PUBLISH_GRACE_S = 15.0
MAX_FAST_RESENDS = 10  # dispatches of one chunk after which only the lease rule re-sends it


# (item id, completed/failed, result, error, milliseconds)
Outcome = tuple[int, str, dict | None, str | None, float | None]


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
    generation: int = 0  # the chunk's dispatch count: names this delivery (older ones are stale)


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
            # one executemany per table, no ORM objects: a 1,000-image job is ~5x less CPU in
            # the gateway's process, where the line's requests run
            if rows:
                s.execute(insert(BatchItem), [{"job_id": job_id, "seq": i, "chunk": i // chunk_size, "source": src,
                                               "name": nm[:512], "state": "pending"}
                                              for i, (src, nm) in enumerate(rows)])
                s.execute(insert(BatchChunk), [{"job_id": job_id, "seq": c, "state": "queued"}
                                               for c in range((len(rows) + chunk_size - 1) // chunk_size)])
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
        """Mark up to ``window - in flight`` queued chunks dispatched, one slot at a time to
        the job that ranks first (``priority.rank_key``: effective level with aging counted
        only while a job has nothing in flight, see ``priority``).

        Committed *before* any message leaves, as unpublished: the caller publishes, then
        says so (``mark_published``) or hands back what the broker refused (``undispatch``).
        A dispatcher that dies in between leaves its chunks unpublished, and the sweeper
        sends them again within ``PUBLISH_GRACE_S`` under a new generation
        (``requeue_stale``), so a message that did get out is stale and does nothing. No
        network call happens inside the transaction, and no generation is handed out twice."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            in_flight = s.scalar(select(func.count()).select_from(BatchChunk)
                                 .where(BatchChunk.state == "dispatched")) or 0
            free = window - in_flight
            if free <= 0:
                return []
            flying = func.sum(case((BatchChunk.state == "dispatched", 1), else_=0))
            queued = func.sum(case((BatchChunk.state == "queued", 1), else_=0))
            rows = s.execute(
                select(BatchJob.id, BatchJob.priority, BatchJob.created_at, BatchJob.kind, flying,
                       func.max(BatchChunk.dispatched_at))
                .join(BatchChunk, BatchChunk.job_id == BatchJob.id)
                .where(BatchJob.state == "running")
                .group_by(BatchJob.id, BatchJob.priority, BatchJob.created_at, BatchJob.kind)
                .having(queued > 0)).all()
            jobs = {jid: _Waiting(p, created, kind, int(n or 0), max(held or created, created))
                    for jid, p, created, kind, n, held in rows}
            out: list[Dispatch] = []
            while free > 0 and jobs:
                jid, w = min(jobs.items(), key=lambda kv: kv[1].rank(now, aging_s))
                c = s.scalars(select(BatchChunk).where(BatchChunk.job_id == jid, BatchChunk.state == "queued")
                              .order_by(BatchChunk.seq).limit(1).with_for_update(skip_locked=True)).first()
                if c is None:  # its last queued chunks went to a concurrent dispatcher
                    del jobs[jid]
                    continue
                level = effective_level(w.priority, w.waited(now), aging_s)
                # conditional on what was read: SQLite has no row locks (FOR UPDATE is ignored
                # there), so two dispatchers can read the same queued chunk; only one write
                # matches, and the other moves on. Unguarded, both sent it under one generation
                # and two workers ran its images (seen under CPU load: 164-172 of 160 inferred)
                seq, before = c.seq, c.dispatches
                generation = before + 1
                taken = s.execute(update(BatchChunk)
                                  .where(BatchChunk.job_id == jid, BatchChunk.seq == seq,
                                         BatchChunk.state == "queued", BatchChunk.dispatches == before)
                                  .values(state="dispatched", dispatched_at=now, dispatches=generation,
                                          published=False)
                                  .execution_options(synchronize_session=False)).rowcount
                s.expire(c)
                if taken != 1:
                    continue  # a concurrent dispatcher took it between the read and the write
                out.append(Dispatch(jid, seq, level, w.kind, generation))
                if not w.in_flight:
                    s.execute(update(BatchJob).where(BatchJob.id == jid, BatchJob.started_at.is_(None))
                              .values(started_at=now))
                w.in_flight += 1  # served: back to its own level for the next slot
                free -= 1
            return out

    def mark_published(self, sent: list[Dispatch]) -> None:
        """The broker took these messages: their chunks are no longer the sweeper's to re-send."""
        if not sent:
            return
        with self.sessions.begin() as s:
            for d in sent:
                s.execute(update(BatchChunk).where(BatchChunk.job_id == d.job_id, BatchChunk.seq == d.seq,
                                                   BatchChunk.dispatches == d.generation).values(published=True))

    def undispatch(self, refused: list[Dispatch]) -> None:
        """The broker refused these messages: their chunks go back to the queue, their
        generations spent (a message that got out anyway stays stale)."""
        with self.sessions.begin() as s:
            for d in refused:
                # not one a worker already holds: its message got out after all
                s.execute(update(BatchChunk).where(BatchChunk.job_id == d.job_id, BatchChunk.seq == d.seq,
                                                   BatchChunk.dispatches == d.generation,
                                                   BatchChunk.state == "dispatched",
                                                   BatchChunk.published.is_(False)).values(state="queued"))

    def requeue_stale(self, lease_s: float, max_attempts: int = 5, now: datetime | None = None) -> int:
        """Chunks whose lease lapsed go back to the queue (to be re-sent); returns how many.

        - A *started* chunk (items in a worker's hands) lapses ``lease_s`` after its worker's
          last renewal: the worker died or hangs.
        - A chunk not started yet is waiting in the broker behind others, or its message was
          lost. While some worker shows life (a started chunk renewed, or a chunk finished,
          within ``lease_s``) it
          is left alone: re-sending a merely waiting chunk would only add duplicates. It is
          re-sent when no worker has shown life for ``lease_s``.
        - A chunk whose dispatch committed but whose message is not known to be out (no
          ``mark_published``, no worker's ``hold``) for ``PUBLISH_GRACE_S`` (at most
          ``lease_s``) lost its dispatcher between the commit and the broker: re-sent, alive
          workers or not (``_requeue_unsent``; at most ``MAX_FAST_RESENDS`` times).
        - Attempts are claims (a worker starting on the items), not sends: a lapsed chunk
          whose open items were attempted ``max_attempts`` times fails them instead (a poison
          chunk must not loop forever); waiting in the broker never uses one up.

        ``lease_s=0`` requeues everything in flight (an in-memory broker after a restart)."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=lease_s)
        started_chunk = (select(BatchItem.id).where(BatchItem.job_id == BatchChunk.job_id,
                                                    BatchItem.chunk == BatchChunk.seq,
                                                    BatchItem.state == "processing").exists())
        unsent = self._requeue_unsent(now - timedelta(seconds=min(lease_s, PUBLISH_GRACE_S)))
        with self.sessions.begin() as s:
            stale = list(s.scalars(select(BatchChunk).where(BatchChunk.state == "dispatched",
                                                            BatchChunk.dispatched_at <= cutoff)
                                   .with_for_update(skip_locked=True)))
            if not stale:
                return unsent
            started = {(c.job_id, c.seq) for c in s.scalars(
                select(BatchChunk).where(BatchChunk.state == "dispatched", BatchChunk.dispatched_at <= cutoff,
                                         started_chunk))}
            # life: a started chunk renewed within the lease, or a chunk finished within it
            # (finish_chunk stamps dispatched_at): between one chunk's end and the next one's
            # claim no chunk is started, and the waiting ones must not be re-sent for that
            alive = s.scalar(select(func.count()).select_from(BatchChunk)
                             .where(BatchChunk.dispatched_at > cutoff,
                                    or_(and_(BatchChunk.state == "dispatched", started_chunk),
                                        BatchChunk.state == "done"))) or 0
            requeued, poisoned = unsent, []
            for c in stale:
                if (c.job_id, c.seq) not in started and alive:
                    continue
                requeued += 1
                open_items = (BatchItem.job_id == c.job_id, BatchItem.chunk == c.seq,
                              BatchItem.state.in_(("pending", "processing")))
                attempts = s.scalar(select(func.max(BatchItem.attempts)).where(*open_items)) or 0
                if attempts >= max_attempts:
                    c.state = "done"
                    poisoned.append(c)
                    s.execute(update(BatchItem).where(*open_items)
                              .values(state="failed", finished_at=now,
                                      error=f"gave up after {attempts} attempts (the worker was lost each time)"))
                else:
                    c.state = "queued"
        for c in poisoned:
            self._maybe_finish(c.job_id)
        return requeued

    def _requeue_unsent(self, cutoff: datetime) -> int:
        """Chunks whose dispatch committed before ``cutoff`` and whose message is not known to
        be out: back to the queue. Its own short transaction, rows skipped while another
        holds them (a dispatcher or a worker's renewal), so the sweeper never waits on the
        line of work. After ``MAX_FAST_RESENDS`` dispatches a chunk is left to the lease rule:
        a message that keeps getting lost without a trace must not spin every few seconds."""
        with self.sessions.begin() as s:
            lost = s.execute(select(BatchChunk.job_id, BatchChunk.seq, BatchChunk.dispatches)
                             .where(BatchChunk.state == "dispatched", BatchChunk.published.is_(False),
                                    BatchChunk.dispatched_at <= cutoff, BatchChunk.dispatches < MAX_FAST_RESENDS)
                             .with_for_update(skip_locked=True)).all()
            for job_id, seq, generation in lost:
                s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq,
                                                   BatchChunk.dispatches == generation).values(state="queued"))
        return len(lost)

    # -- the worker's side -----------------------------------------------------------------
    def renew(self, leases: list[tuple[str, int, int | None]], now: datetime | None = None,
              done_is_held: bool = False) -> list[bool]:
        """(job id, seq, generation) of chunks a worker is on -> their leases run from ``now``.
        Returns which this worker still holds: False when the chunk was re-sent since (a
        newer generation) or taken back by the sweeper. With ``done_is_held`` (the lease
        keeper's renewals), a chunk this generation has just finished counts as held: its
        worker has not let go of the lease yet, and nothing was lost. ``generation=None`` (the tuner's
        probe, messages from before generations) renews whatever is in flight and says True."""
        now = now or utcnow()
        held = []
        with self.sessions.begin() as s:
            for job_id, seq, gen in leases:
                q = update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq,
                                             BatchChunk.state == "dispatched")
                if gen is not None:
                    q = q.where(BatchChunk.dispatches == gen)
                # a delivery proves its message got out: never the sweeper's to re-send as unsent
                n = s.execute(q.values(dispatched_at=now, published=True)).rowcount
                if n == 0 and gen is not None and done_is_held:
                    # finished by this very delivery a moment ago (its worker has not let go
                    # of the lease yet): done, not lost
                    done = s.scalar(select(func.count()).select_from(BatchChunk).where(
                        BatchChunk.job_id == job_id, BatchChunk.seq == seq, BatchChunk.state == "done",
                        BatchChunk.dispatches == gen))
                    n = int(done or 0)
                held.append(gen is None or n == 1)
        return held

    def hold(self, job_id: str, seq: int, generation: int | None) -> bool:
        """A worker starts on a delivered chunk: False means this delivery is stale - the
        chunk was re-sent after its lease lapsed, and the newer message does the work."""
        return self.renew([(job_id, seq, generation)])[0]

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

    def finish_items(self, outcomes: list[Outcome]) -> list[bool]:
        """(item id, completed/failed, result, error, ms) for a whole Triton batch in one
        transaction; each write only applies to an unfinished item. Returns which applied."""
        now = utcnow()
        with self.sessions.begin() as s:
            return self._write_items(s, outcomes, now)

    @staticmethod
    def _write_items(s, outcomes: list[Outcome], now: datetime) -> list[bool]:
        """Each outcome applies only to an unfinished item: one locking read names them, one
        executemany writes them (an ORM statement per item was the worker's largest cost,
        by py-spy, on the cores Triton computes on)."""
        if not outcomes:
            return []
        open_ids = set(s.scalars(select(BatchItem.id).where(BatchItem.id.in_([o[0] for o in outcomes]),
                                                            BatchItem.state.in_(("pending", "processing")))
                                 .with_for_update()))
        applied, rows = [], []
        for item_id, state, result, error, ms in outcomes:
            ok = item_id in open_ids
            open_ids.discard(item_id)  # the same item twice: only its first outcome applies
            applied.append(ok)
            if ok:
                rows.append({"b_id": item_id, "b_state": state, "b_result": result,
                             "b_error": None if error is None else error[:2000], "b_ms": ms})
        if rows:
            t = cast(Table, BatchItem.__table__)
            s.connection().execute(update(t).where(t.c.id == bindparam("b_id"))
                                   .values(state=bindparam("b_state"), finished_at=now, result=bindparam("b_result"),
                                           error=bindparam("b_error"), duration_ms=bindparam("b_ms")), rows)
        return applied

    def finish_chunk_with(self, job_id: str, seq: int, generation: int | None,
                          outcomes: list[Outcome]) -> tuple[bool, list[bool]]:
        """A chunk's results and its end in one transaction (the worker's one write per
        chunk): every outcome as :meth:`finish_items` writes it, then the chunk is done as
        :meth:`finish_chunk` says - only for the holder of its current generation. Returns
        (whether the chunk was ended, which outcomes applied). The chunk's row is locked
        first, as the sweeper does, so the two never wait on each other in a cycle."""
        now = utcnow()
        with self.sessions.begin() as s:
            current = generation is None or self._is_generation(s, job_id, seq, generation)
            applied = self._write_items(s, outcomes, now)
            if current:
                left = s.scalar(select(func.count()).where(BatchItem.job_id == job_id, BatchItem.chunk == seq,
                                                           BatchItem.state == "pending"))
                s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq)
                          .values(state="queued" if left else "done", dispatched_at=now))
        if current:
            # the job's end is read after the commit: inside it, another worker's chunk
            # committed meanwhile would still look open, and neither would end the job
            self._maybe_finish(job_id)
        return current, applied

    def release(self, job_id: str, seq: int, generation: int | None = None) -> None:
        """A transient failure: the chunk's unfinished items wait for the retry (unless the
        chunk was re-sent meanwhile: then they are its new holder's)."""
        with self.sessions.begin() as s:
            if generation is not None and not self._is_generation(s, job_id, seq, generation):
                return
            s.execute(update(BatchItem).where(BatchItem.job_id == job_id, BatchItem.chunk == seq,
                                              BatchItem.state == "processing").values(state="pending"))

    def finish_chunk(self, job_id: str, seq: int, generation: int | None = None,
                     now: datetime | None = None) -> bool:
        """The chunk's work is done. Only the holder of its current generation may say so (a
        superseded worker must not end a chunk its new holder is still on); returns whether
        it did. The time is kept as the chunk's last hold, from which its job ages."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            if generation is not None and not self._is_generation(s, job_id, seq, generation):
                return False
            # an item retried while its chunk was in flight sends the chunk round again
            left = s.scalar(select(func.count()).where(BatchItem.job_id == job_id, BatchItem.chunk == seq,
                                                       BatchItem.state == "pending"))
            s.execute(update(BatchChunk).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq)
                      .values(state="queued" if left else "done", dispatched_at=now))
        self._maybe_finish(job_id)
        return True

    @staticmethod
    def _is_generation(s, job_id: str, seq: int, generation: int) -> bool:
        return s.scalar(select(BatchChunk.dispatches).where(BatchChunk.job_id == job_id, BatchChunk.seq == seq)
                        .with_for_update()) == generation

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
            # chunks first, then items: the order a chunk's end (finish_chunk_with) and the
            # sweeper lock in, so a cancel racing a worker never deadlocks with it
            s.execute(select(BatchChunk.seq).where(BatchChunk.job_id == job_id).with_for_update())
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


@dataclass
class _Waiting:
    """A running job with queued chunks, as the scheduler ranks it."""
    priority: int
    created: datetime
    kind: str
    in_flight: int
    last_held: datetime  # last dispatch, renewal or finished chunk (creation if none)

    def waited(self, now: datetime) -> float:
        return 0.0 if self.in_flight else max(0.0, (now - self.last_held).total_seconds())

    def rank(self, now: datetime, aging_s: float) -> tuple:
        return rank_key(self.priority, self.waited(now), self.created.timestamp(), aging_s)

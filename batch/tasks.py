"""The Celery task: thin, over ``runner.Runtime``. Transient failures (Triton, database) are
retried with exponential backoff up to ``BATCH_MAX_RETRIES``; then the chunk's open items fail
with the reason, and ``POST /api/v1/jobs/{id}/retry`` can send them again later."""

from __future__ import annotations

import logging
import random
import threading

from sqlalchemy.exc import SQLAlchemyError

from batch.celery_app import celery_app
from batch.processors import Transient
from batch.runner import Runtime
from settings.environment import get_settings

log = logging.getLogger("batch.tasks")
_runtime: Runtime | None = None
_lock = threading.Lock()


# how long a publish may wait for RabbitMQ's confirm (a broker under a memory or disk alarm
# blocks publishers): past it the chunk goes back to the queue, never a thread stuck for good
PUBLISH_TIMEOUT_S = 5.0


def send(job_id: str, seq: int, priority: int, generation: int) -> None:
    """One chunk's message. No publish retry here: a retried publish whose first try reached
    the broker would put two messages of one generation in the queue (both would pass
    ``hold``). A failed publish raises; the dispatcher puts the chunk back and its next
    dispatch is a new generation, so a message that got out anyway is stale."""
    process_chunk.apply_async((job_id, seq, generation), priority=priority,
                              queue=celery_app.conf.task_default_queue, retry=False,
                              timeout=PUBLISH_TIMEOUT_S, confirm_timeout=PUBLISH_TIMEOUT_S)


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(get_settings(), send).start()
        return _runtime


def set_runtime(rt: Runtime | None) -> None:
    """The gateway's embedded worker shares the gateway's runtime."""
    global _runtime
    with _lock:
        _runtime = rt


def backoff_s(retries: int) -> float:
    return min(60.0, 2.0 ** retries) * random.uniform(0.75, 1.25)


@celery_app.task(bind=True, name="pcb.batch.chunk", max_retries=None)
def process_chunk(self, job_id: str, seq: int, generation: int | None = None) -> None:
    """``generation``: which dispatch of the chunk this message is (a retry keeps it; a
    message superseded by a re-send does nothing). None: a message from before generations."""
    rt = runtime()
    try:
        rt.run_chunk(job_id, seq, generation)
    except (Transient, SQLAlchemyError) as e:
        retries = self.request.retries
        if retries >= rt.settings.batch_max_retries:
            log.error("chunk %s/%d: giving up after %d retries: %r", job_id, seq, retries, e)
            _give_up(rt, job_id, seq, generation, f"gave up after {retries} retries: {e}")
            return
        log.warning("chunk %s/%d: %r; retry %d in a moment", job_id, seq, e, retries + 1)
        try:
            rt.store.release(job_id, seq, generation)
        except SQLAlchemyError:
            pass  # the database is the thing that is down; claim() takes them back anyway
        raise self.retry(exc=e, countdown=backoff_s(retries)) from None


def _give_up(rt: Runtime, job_id: str, seq: int, generation: int | None, reason: str) -> None:
    if not rt.store.hold(job_id, seq, generation):
        return  # re-sent meanwhile: the newer delivery decides
    for it in rt.store.claim(job_id, seq, rt.name):
        rt.store.fail(it.id, reason[:500])
    rt.store.finish_chunk(job_id, seq, generation)
    rt.refill()

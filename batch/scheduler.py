"""Feeding the broker: the database decides *what* runs next (priority with aging, a window of
chunks in flight over all jobs); the broker delivers, acknowledges and redelivers.

Keeping only ``window`` chunks in the broker is what lets a new urgent job overtake a long
job already running, on any transport (RabbitMQ priorities then also reorder the window).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from batch.priority import broker_priority
from batch.store import Dispatch, JobStore

log = logging.getLogger("batch.scheduler")

Send = Callable[[str, int, int, int], None]  # (job_id, chunk seq, broker priority, generation)


def dispatch(store: JobStore, send: Send, window: int, aging_s: float) -> int:
    """Hand free window slots to the most urgent queued chunks. Safe to call from anywhere,
    any number of times (gateway on submit, workers after each chunk, the sweeper).

    The dispatch commits first, then the messages go out, then they are marked published
    (``JobStore.take_dispatches`` says why this order). After the broker refuses one, the
    rest of the round are not tried: each try can take up to the publish timeout
    (``tasks.PUBLISH_TIMEOUT_S``), and a broker that refused one takes none; they all wait
    in the database."""
    taken = store.take_dispatches(window, aging_s)
    sent: list[Dispatch] = []
    for i, d in enumerate(taken):
        try:
            send(d.job_id, d.seq, broker_priority(d.level), d.generation)
        except Exception as e:  # noqa: BLE001 - broker down: the chunks wait in the database
            log.warning("broker refused chunk %s/%d (%r); it and %d more stay queued", d.job_id, d.seq, e,
                        len(taken) - i - 1)
            store.undispatch(taken[i:])
            break
        sent.append(d)
    store.mark_published(sent)
    return len(sent)


def sweep(store: JobStore, send: Send, window: int, aging_s: float, lease_s: float,
          max_attempts: int) -> int:
    """Requeue chunks whose lease lapsed (message lost, worker dead or hung: a live worker
    renews its chunks' leases), then refill."""
    stale = store.requeue_stale(lease_s, max_attempts)
    if stale:
        log.warning("requeued %d chunk(s): lease lapsed (%.0f s) or message never reached the broker",
                    stale, lease_s)
    return dispatch(store, send, window, aging_s)

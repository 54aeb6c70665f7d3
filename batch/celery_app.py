"""The Celery application of the batch engine.

One queue with RabbitMQ priorities (``x-max-priority``), late acks (a task is acknowledged
only after its results are in the database, so a killed worker's chunk is redelivered),
prefetch 1 (a worker holds no more than it runs, so urgent work is not stuck behind a
prefetched backlog). ``memory://`` runs the same engine in-process for ``make demo``.

Operators: ``celery --app batch.celery_app flower`` shows workers, tasks and queues.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from batch.priority import MAX_BROKER_PRIORITY
from settings.environment import Settings, get_settings

EMBEDDED_POLL_S = 0.1


def configure(app: Celery, settings: Settings) -> Celery:
    memory = settings.batch_broker_url.startswith("memory://")
    amqp = settings.batch_broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
    queue = Queue(settings.batch_queue, Exchange(settings.batch_queue), routing_key=settings.batch_queue,
                  queue_arguments={"x-max-priority": MAX_BROKER_PRIORITY})
    app.conf.update(
        broker_url=settings.batch_broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # the in-memory transport polls (1 s by default: a chunk handed over just after a poll
        # would wait that long). Not every 10 ms either: the embedded worker polls inside the
        # gateway's process, and 100 polls/s took ~20 % of its busy time (GIL) from the line's
        # requests (make bench-profile). A chunk waits at most 0.1 s, and only when the worker
        # had nothing prefetched. The Redis transport emulates priorities with one list per step
        broker_transport_options=({"polling_interval": EMBEDDED_POLL_S} if memory else
                                  {"priority_steps": list(range(MAX_BROKER_PRIORITY + 1)),
                                   "queue_order_strategy": "priority", "sep": ":",
                                   # AMQP: a publish returns once RabbitMQ has the message
                                   # (publisher confirms), so "published" is true, and a
                                   # broker-side refusal raises instead of vanishing
                                   **({"confirm_publish": True} if amqp else {})}),
        task_queues=[queue],
        task_default_queue=settings.batch_queue,
        task_default_routing_key=settings.batch_queue,
        task_queue_max_priority=MAX_BROKER_PRIORITY,
        task_default_priority=0,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # a task that raised unexpectedly is acked (no poison-message loop); its chunk stays
        # "dispatched" in the database and the lease sweeper sends it again, a bounded number
        # of times (JobStore.requeue_stale)
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
    )
    return app


celery_app = configure(Celery("pcb_batch", include=["batch.tasks"]), get_settings())

"""The embedded engine for ``make demo`` and a laptop: the same Celery app and task, a
worker running in a thread of this process over the in-memory transport, state in the same
database. Messages in memory die with the process; on start the sweeper requeues every chunk
that was in flight, so a restart resumes where it stopped."""

from __future__ import annotations

import logging
import socket
import threading

from celery import Celery

log = logging.getLogger("gateway.batch.embedded")


class EmbeddedWorker:
    def __init__(self, app: Celery, concurrency: int):
        self.app = app
        self.concurrency = concurrency
        self.worker = None
        self.thread: threading.Thread | None = None

    def start(self) -> EmbeddedWorker:
        self.worker = self.app.WorkController(
            hostname=f"embedded@{socket.gethostname()}", pool_cls="threads", concurrency=self.concurrency,
            loglevel="WARNING", without_heartbeat=True, without_mingle=True, without_gossip=True,
            ready_callback=lambda *_: log.info("embedded batch worker ready"))
        self.thread = threading.Thread(target=self.worker.start, name="batch-embedded", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.worker is not None:
            self.worker.stop(in_sighandler=False)
        if self.thread is not None:
            self.thread.join(timeout)

"""The embedded engine for ``make demo`` and a laptop: the same Celery app and task, a
worker running in a thread of this process over the in-memory transport, state in the same
database. Messages in memory die with the process; on start the sweeper requeues every chunk
that was in flight, so a restart resumes where it stopped."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery import Celery

log = logging.getLogger("batch.embedded")
READY_TIMEOUT_S = 30.0


class EmbeddedWorker:
    def __init__(self, app: Celery, concurrency: int):
        self.app = app
        self.concurrency = concurrency
        self.worker: Any = None  # celery's WorkController, made in start()
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()

    def start(self, wait_s: float = READY_TIMEOUT_S) -> EmbeddedWorker:
        """Returns once the worker consumes (or after ``wait_s``): chunks handed over earlier
        would only sit in the queue with their leases running."""
        self.worker = self.app.WorkController(
            hostname=f"embedded@{socket.gethostname()}", pool_cls="threads", concurrency=self.concurrency,
            loglevel="WARNING", without_heartbeat=True, without_mingle=True, without_gossip=True,
            ready_callback=self._ready)
        self.thread = threading.Thread(target=self.worker.start, name="batch-embedded", daemon=True)
        self.thread.start()
        if not self.ready.wait(wait_s):
            log.warning("embedded batch worker not ready after %.0f s; going on", wait_s)
        return self

    def _ready(self, *_) -> None:
        log.info("embedded batch worker ready")
        self.ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self.worker is not None:
            self.worker.stop(in_sighandler=False)
        if self.thread is not None:
            self.thread.join(timeout)

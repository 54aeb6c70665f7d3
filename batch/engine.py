"""The batch engine as the gateway and the CLI see it: submit, read, cancel, retry. With a
``memory://`` broker it also runs the worker in-process (embedded default)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from batch import scheduler, tasks, tuning
from batch.celery_app import celery_app, configure
from batch.embedded import EmbeddedWorker
from batch.priority import Priority
from batch.runner import Runtime
from batch.store import JobStore
from settings.environment import Settings

log = logging.getLogger("batch")
SWEEP_INTERVAL_S = 10.0


class BatchEngine:
    def __init__(self, settings: Settings, sessions: sessionmaker):
        self.settings = settings
        self.store = JobStore(sessions)
        configure(celery_app, settings)
        self.embedded = settings.batch_broker_url.startswith("memory://")
        self.worker: EmbeddedWorker | None = None
        self.runtime: Runtime | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, sweep: bool = True) -> BatchEngine:
        if self.embedded:
            # messages in memory died with the last process: everything in flight goes again
            self.store.requeue_stale(0, self.settings.batch_max_retries + 1)
            self.runtime = Runtime(self.settings, tasks.send, self.store).start()
            tasks.set_runtime(self.runtime)
            self.worker = EmbeddedWorker(celery_app, self.runtime.pool_size).start()
        if sweep:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="batch-sweeper", daemon=True)
            self._sweeper.start()
        self.refill()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.stop()
        if self.runtime is not None:
            self.runtime.stop()
            tasks.set_runtime(None)

    def _sweep_loop(self) -> None:
        # a lapsed lease is noticed within a third of the lease (at most SWEEP_INTERVAL_S)
        interval = min(SWEEP_INTERVAL_S, max(0.1, self.settings.batch_lease_s / 3))
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as e:  # noqa: BLE001 - database or broker down: next round
                log.warning("batch sweep failed: %r", e)

    def sweep(self) -> int:
        s = self.settings
        return scheduler.sweep(self.store, tasks.send, s.batch_window, s.batch_aging_s, s.batch_lease_s,
                               s.batch_max_retries + 1)

    def refill(self) -> int:
        return scheduler.dispatch(self.store, tasks.send, self.settings.batch_window, self.settings.batch_aging_s)

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, sources: list[tuple[str, str]], *, priority: Priority | str | int = Priority.NORMAL,
               kind: str = "inspect", name: str = "", options: dict | None = None,
               chunk_size: int | None = None, job_id: str | None = None, client_key: str | None = None,
               client_fingerprint: str | None = None) -> str:
        if chunk_size is None:
            chunk_size, _ = tuning.current(self.store.sessions, self.settings)
        job_id = self.store.create_job(sources, priority=Priority.parse(priority), chunk_size=chunk_size,
                                       kind=kind, name=name, options=options,
                                       job_id=job_id, client_key=client_key,
                                       client_fingerprint=client_fingerprint)
        try:
            self.refill()
        except Exception as e:  # noqa: BLE001 - broker down: the job is stored, the sweeper sends it
            log.warning("job %s stored; dispatch deferred (%r)", job_id, e)
        return job_id

    def job_dir(self, job_id: str) -> Path:
        return Path(self.settings.batch_data_dir) / job_id

    def cancel(self, job_id: str) -> None:
        self.store.cancel_job(job_id)

    def retry(self, job_id: str) -> int:
        n = self.store.retry_failed(job_id)
        if n:
            self.refill()
        return n

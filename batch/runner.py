"""One chunk, start to finish, on a worker: take its lease (a stale delivery does nothing),
claim its items, read the files, send them to Triton as one batch (split smaller when the
resource monitor says so), store each outcome, then mark the chunk done and refill the
broker; the lease is renewed all along (``lease.py``). Plain code; ``tasks.py`` wraps it for
Celery.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batch import tuning
from batch.lease import LeaseKeeper
from batch.processors import ItemError, make_processor
from batch.resources import ResourceMonitor, Thresholds
from batch.scheduler import Send, dispatch
from batch.store import Claimed, JobStore
from inference.sync import SyncTriton
from pcb.image_decode import ImageError, check_header
from settings.environment import Settings
from store.session import make_engine, make_sessionmaker

log = logging.getLogger("batch.runner")

# the worker's own metrics (served on BATCH_METRICS_PORT by the worker process)
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
ITEMS = Counter("batch_worker_items_total", "Items finished by this worker", ["outcome"],
                registry=WORKER_REGISTRY)
BATCH_SIZE = Gauge("batch_worker_batch_size", "Current Triton batch size (resource monitor)",
                   registry=WORKER_REGISTRY)
CONCURRENCY = Gauge("batch_worker_concurrency", "Current chunks in parallel (resource monitor)",
                    registry=WORKER_REGISTRY)
STALE = Counter("batch_worker_stale_deliveries_total",
                "Chunk deliveries dropped because the chunk had been re-sent (or this worker lost its lease)",
                registry=WORKER_REGISTRY)
CHUNK_SECONDS = Histogram("batch_worker_chunk_duration_seconds", "Time to finish one chunk",
                          buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=WORKER_REGISTRY)


class Runtime:
    def __init__(self, settings: Settings, send: Send, store: JobStore | None = None):
        self.settings = settings
        self.send = send
        self.store = store or JobStore(make_sessionmaker(make_engine(settings.database_url)))
        self.triton = SyncTriton(settings.triton_url, lb_policy=settings.triton_grpc_lb_policy)
        batch, conc = tuning.current(self.store.sessions, settings)
        self.monitor = ResourceMonitor(batch, conc, thresholds=Thresholds(settings.batch_cpu_high,
                                                                          settings.batch_mem_high))
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.leases = LeaseKeeper(self.store, settings.batch_lease_s)

    def start(self) -> Runtime:
        self.monitor.start()
        self.leases.start()
        return self

    def stop(self) -> None:
        self.monitor.stop()
        self.leases.stop()

    def refill(self) -> int:
        return dispatch(self.store, self.send, self.settings.batch_window, self.settings.batch_aging_s)

    def run_chunk(self, job_id: str, seq: int, generation: int | None = None) -> None:
        """Raises processors.Transient (or a database error) when it should be retried.
        ``generation``: the dispatch this message carries (None: the tuner's probe)."""
        t0 = time.perf_counter()
        with self.leases.hold(job_id, seq, generation) as lease:
            if lease is None:
                STALE.inc()
                log.info("chunk %s/%d: delivery %s was superseded by a re-send; dropped", job_id, seq, generation)
                return
            with self.monitor:
                limits = self.monitor.limits
                BATCH_SIZE.set(limits.batch_size)
                CONCURRENCY.set(limits.concurrency)
                worker = f"{self.name}:{threading.current_thread().name}"
                items = self.store.claim(job_id, seq, worker)
                if items:
                    job = self.store.job(job_id)
                    processor = make_processor(job.kind, self.triton, job.options)
                    job_dir = Path(self.settings.batch_data_dir) / job_id
                    for i in range(0, len(items), limits.batch_size):
                        if lease.lost:  # re-sent: its new holder does the rest
                            STALE.inc()
                            return
                        self._run(processor, items[i:i + limits.batch_size], job_dir)
            self.store.finish_chunk(job_id, seq, generation)
        CHUNK_SECONDS.observe(time.perf_counter() - t0)
        self.refill()

    def _run(self, processor, items: list[Claimed], job_dir: Path) -> None:
        ready, payloads = [], []
        for it in items:
            try:
                data = _read(it.source, self.settings.max_upload_bytes)
                check_header(data[:65536], self.settings.max_pixels)
            except (OSError, ImageError, ItemError) as e:
                self._fail(it, _reason(e))
                continue
            ready.append(it)
            payloads.append(data)
        if not ready:
            return
        t0 = time.perf_counter()
        outcomes = processor.run(payloads, [it.name for it in ready], job_dir)
        per_item_ms = (time.perf_counter() - t0) * 1000 / len(ready)
        rows: list[tuple[int, str, dict | None, str | None, float | None]] = [
            (it.id, "failed", None, str(out), per_item_ms) if isinstance(out, ItemError)
                else (it.id, "completed", out, None, per_item_ms) for it, out in zip(ready, outcomes, strict=True)]
        for r, applied in zip(rows, self.store.finish_items(rows), strict=True):
            if applied:  # a redelivered chunk's already-finished items are not counted again
                ITEMS.labels(r[1]).inc()

    def _fail(self, it: Claimed, reason: str, ms: float | None = None) -> None:
        if self.store.fail(it.id, reason, ms):
            ITEMS.labels("failed").inc()


def _read(path: str, limit: int) -> bytes:
    p = Path(path)
    size = p.stat().st_size
    if size > limit:
        raise ItemError(f"image_too_large: {size} bytes (limit {limit})")
    return p.read_bytes()


def _reason(e: Exception) -> str:
    if isinstance(e, ImageError):
        return f"{e.code}: {e.message}"
    if isinstance(e, FileNotFoundError):
        return "unreadable: file not found"
    if isinstance(e, OSError):
        return f"unreadable: {e.strerror or e}"
    return str(e)

"""One chunk, start to finish, on a worker: take its lease (a stale delivery does nothing),
wait for a read-ahead slot, claim its items and read the files (while Triton computes the
chunk before), wait for an in-flight slot, send them to Triton as one batch (split smaller
when the worker's memory is high), leave the slot the moment Triton answers, then write
every outcome and the chunk's end in one transaction and refill the broker. How many chunks
are in flight is the congestion controller's call (``congestion.py``, gated by
``inflight.py``); the lease is renewed all along (``lease.py``). Plain code; ``tasks.py``
wraps it for Celery.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batch import tuning
from batch.congestion import AIMD, Step
from batch.inflight import InFlight
from batch.lease import LeaseKeeper
from batch.processors import ItemError, make_processor
from batch.resources import MemoryGuard, Thresholds
from batch.scheduler import Send, dispatch
from batch.store import Claimed, JobStore, Outcome
from batch.triton_signal import QueueSignal
from inference import contract
from inference.sync import SyncTriton
from pcb.image_decode import ImageError, check_header
from settings.environment import Settings
from store.session import make_engine, make_sessionmaker

log = logging.getLogger("batch.runner")

# the worker's own metrics (served on BATCH_METRICS_PORT by the worker process)
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
ITEMS = Counter("batch_worker_items_total", "Items finished by this worker", ["outcome"],
                registry=WORKER_REGISTRY)
BATCH_SIZE = Gauge("batch_worker_batch_size", "Current Triton batch size (memory guard)",
                   registry=WORKER_REGISTRY)
CONCURRENCY = Gauge("batch_worker_concurrency", "Chunks in Triton at once (congestion controller)",
                    registry=WORKER_REGISTRY)
STALE = Counter("batch_worker_stale_deliveries_total",
                "Chunk deliveries dropped because the chunk had been re-sent (or this worker lost its lease)",
                registry=WORKER_REGISTRY)
CHUNK_SECONDS = Histogram("batch_worker_chunk_duration_seconds", "Time to finish one chunk",
                          buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=WORKER_REGISTRY)


READ_AHEAD = 1  # chunks read while the in-flight ones are in Triton
JOB_CACHE = 256


class Runtime:
    def __init__(self, settings: Settings, send: Send, store: JobStore | None = None,
                 max_inflight: int | None = None):
        self.settings = settings
        self.send = send
        self.store = store or JobStore(make_sessionmaker(make_engine(settings.database_url)))
        self.triton = SyncTriton(settings.triton_url, lb_policy=settings.triton_grpc_lb_policy)
        batch, conc = tuning.current(self.store.sessions, settings)
        hi = max(1, max_inflight or max(settings.batch_max_inflight, conc))
        self.memory = MemoryGuard(batch, thresholds=Thresholds(settings.batch_mem_limit_mb))
        self.controller = AIMD(seed=conc, lo=1, hi=hi)
        self.inflight = InFlight(self.controller, READ_AHEAD, on_step=self._stepped)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.leases = LeaseKeeper(self.store, settings.batch_lease_s)
        self._signals: dict[str, QueueSignal] = {}
        self._jobs: dict[str, tuple[str, dict]] = {}
        self._trace = Path(settings.batch_trace_dir) / f"{self.name.replace(':', '-')}.jsonl" \
            if settings.batch_trace_dir else None
        CONCURRENCY.set(self.controller.limit)

    @property
    def pool_size(self) -> int:
        """Worker threads the broker should feed: the controller's ceiling in Triton, the
        chunk read ahead, and one writing its results."""
        return self.controller.hi + READ_AHEAD + 1

    def start(self) -> Runtime:
        self.memory.start()
        self.leases.start()
        return self

    def stop(self) -> None:
        self.memory.stop()
        self.leases.stop()

    def refill(self) -> int:
        return dispatch(self.store, self.send, self.settings.batch_window, self.settings.batch_aging_s)

    def _stepped(self, step: Step) -> None:
        CONCURRENCY.set(step.limit)
        if step.reason not in ("hold", "start"):
            log.info("concurrency %d (%s: %.1f img/s, %.0f ms/img, queue %s ms)", step.limit, step.reason,
                     step.items_per_s, step.latency_ms, step.queue_ms)
        if self._trace is not None:
            wall = step.t + time.time() - time.monotonic()  # traces of several workers on one clock
            try:
                self._trace.parent.mkdir(parents=True, exist_ok=True)
                with self._trace.open("a") as f:
                    f.write(json.dumps({"worker": self.name, "t": round(wall, 3), "limit": step.limit,
                                        "reason": step.reason, "items_per_s": step.items_per_s,
                                        "latency_ms": step.latency_ms, "queue_ms": step.queue_ms}) + "\n")
            except OSError as e:  # the trace is for people; the work goes on without it
                log.warning("controller trace %s: %s", self._trace, e)
                self._trace = None

    def _job(self, job_id: str) -> tuple[str, dict]:
        """(kind, options) of a job: fixed at submission, so read once per worker."""
        if job_id not in self._jobs:
            job = self.store.job(job_id)
            if len(self._jobs) >= JOB_CACHE:
                self._jobs.clear()
            self._jobs[job_id] = (job.kind, job.options or {})
        return self._jobs[job_id]

    def _signal(self, model: str) -> QueueSignal:
        if model not in self._signals:
            self._signals[model] = QueueSignal(self.triton, contract.QUEUE_MODELS.get(model, (model,)))
        return self._signals[model]

    def run_chunk(self, job_id: str, seq: int, generation: int | None = None) -> None:
        """Raises processors.Transient (or a database error) when it should be retried.
        ``generation``: the dispatch this message carries (None: the tuner's probe)."""
        t0 = time.perf_counter()
        with self.leases.hold(job_id, seq, generation) as lease:
            if lease is None:
                STALE.inc()
                log.info("chunk %s/%d: delivery %s was superseded by a re-send; dropped", job_id, seq, generation)
                return
            rows: list[Outcome] = []
            try:
                with self.inflight.staged():
                    worker = f"{self.name}:{threading.current_thread().name}"
                    items = self.store.claim(job_id, seq, worker)
                    if items:
                        kind, options = self._job(job_id)
                        processor = make_processor(kind, self.triton, options)
                        job_dir = Path(self.settings.batch_data_dir) / job_id
                        size = self.memory.batch_size(len(items))
                        BATCH_SIZE.set(size)
                        for i in range(0, len(items), size):
                            if lease.lost:  # re-sent: its new holder does the rest
                                STALE.inc()
                                self._count(rows, self.store.finish_items(rows))
                                return
                            rows += self._run(processor, items[i:i + size], job_dir)
            except BaseException:
                self._keep(rows)
                raise
            try:
                _, applied = self.store.finish_chunk_with(job_id, seq, generation, rows)
            except BaseException:
                self._keep(rows)  # the one write failed: keep what Triton answered, if the database takes it
                raise
            self._count(rows, applied)
        CHUNK_SECONDS.observe(time.perf_counter() - t0)
        self.refill()

    def _run(self, processor, items: list[Claimed], job_dir: Path) -> list[Outcome]:
        """One Triton batch of ``items``: their outcomes (bad files fail alone, before Triton)."""
        rows: list[Outcome] = []
        ready, payloads = [], []
        for it in items:
            try:
                data = _read(it.source, self.settings.max_upload_bytes)
                check_header(data[:65536], self.settings.max_pixels)
            except (OSError, ImageError, ItemError) as e:
                rows.append((it.id, "failed", None, _reason(e), None))
                continue
            ready.append(it)
            payloads.append(data)
        if not ready:
            return rows
        with self.inflight.flight() as ticket:
            outcomes = processor.run(payloads, [it.name for it in ready], job_dir)
        per_item_ms = (ticket.end - ticket.start) * 1000 / len(ready)
        rows += [(it.id, "failed", None, str(out), per_item_ms) if isinstance(out, ItemError)
                 else (it.id, "completed", out, None, per_item_ms) for it, out in zip(ready, outcomes, strict=True)]
        try:  # the controller's signal must never cost the answers already in hand
            self.inflight.report(ticket, len(ready), self._signal(getattr(processor, "model", "")).read())
        except Exception as e:  # noqa: BLE001
            log.warning("congestion signal not read: %r", e)
        return rows

    def _keep(self, rows: list[Outcome]) -> None:
        """A chunk cut short (Triton or the database failed in a later batch): the batches
        already answered are kept, if the database takes them."""
        if not rows:
            return
        try:
            self._count(rows, self.store.finish_items(rows))
        except Exception as e:  # noqa: BLE001 - the original failure is the one to retry on
            log.warning("could not keep %d finished item(s) of a failed chunk: %r", len(rows), e)

    @staticmethod
    def _count(rows: list[Outcome], applied: list[bool]) -> None:
        for r, ok in zip(rows, applied, strict=True):
            if ok:  # a redelivered chunk's already-finished items are not counted again
                ITEMS.labels(r[1]).inc()


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

"""The worker's side of chunk leases: while a worker is on a chunk it renews the chunk's lease
every third of ``BATCH_LEASE_S`` (one thread per worker process renews all its chunks in one
transaction), so the sweeper re-sends only chunks whose worker died, hangs or lost its
message, never a healthy chunk that is merely slower than the lease.

Contract:
- A chunk in a live worker's hands is renewed; its lease lapses at most ``BATCH_LEASE_S``
  after its worker died (a missed renewal or two - a database blip - is absorbed).
- A worker renews one chunk for at most ``MAX_HOLD_LEASES`` leases (1 h at the default
  300 s): every wait inside a chunk is bounded (Triton calls time out), so a chunk held
  longer is presumed hung, and the sweeper may re-send it.
- A renewal that finds the chunk re-sent (a newer generation) marks the lease lost; the
  worker stops before its next Triton batch and leaves the chunk to its new holder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from batch.store import JobStore

log = logging.getLogger("batch.lease")
MAX_HOLD_LEASES = 12


@dataclass(eq=False)
class Lease:
    job_id: str
    seq: int
    generation: int | None
    since: float = field(default_factory=time.monotonic)
    lost: bool = False


class LeaseKeeper:
    def __init__(self, store: JobStore, lease_s: float):
        self.store = store
        self.interval_s = max(0.05, lease_s / 3)
        self.max_hold_s = MAX_HOLD_LEASES * lease_s
        self._held: set[Lease] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="batch-leases", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def hold(self, job_id: str, seq: int, generation: int | None) -> Iterator[Lease | None]:
        """The lease of a delivered chunk, renewed until the block ends; ``None`` when the
        delivery is stale (the chunk was re-sent since): then the worker does nothing."""
        if not self.store.hold(job_id, seq, generation):
            yield None
            return
        lease = Lease(job_id, seq, generation)
        with self._lock:
            self._held.add(lease)
        try:
            yield lease
        finally:
            with self._lock:
                self._held.discard(lease)

    def renew_now(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [x for x in self._held if not x.lost and now - x.since < self.max_hold_s]
        if not due:
            return
        renewed = self.store.renew([(x.job_id, x.seq, x.generation) for x in due], done_is_held=True)
        with self._lock:  # a chunk that ended meanwhile was not lost, just done
            lost = [x for x, held in zip(due, renewed, strict=True) if not held and x in self._held]
        for lease in lost:
            lease.lost = True
            log.warning("chunk %s/%d: lease lost (re-sent to another worker); stopping", lease.job_id, lease.seq)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew_now()
            except Exception as e:  # noqa: BLE001 - database away: the next round tries again
                log.warning("lease renewal failed: %r", e)

"""Memory guard of the worker's own process (psutil, every second): while its resident memory
is above ``BATCH_MEM_LIMIT_MB`` the worker halves its Triton batch size (a batch's files and
answers are what it holds); after a few calm samples it steps back up towards the chunk
size. The rule is a pure function (``adjust``), tested without loading a machine.

Concurrency is not its business: the chunks in flight follow Triton's latency and queue
(``batch.congestion``). Host CPU is not watched at all: on a machine shared with Triton (the
CPU layout always), "CPU above 90 %" measures Triton's own work, and halving the worker's
concurrency then only idles Triton (issue 19 measured the seed's rule costing ~20 %).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

import psutil

log = logging.getLogger("batch.resources")


@dataclass(frozen=True)
class Limits:
    batch_size: int
    calm: int = 0  # consecutive calm samples


@dataclass(frozen=True)
class Thresholds:
    mem_limit_mb: float = 1024.0
    calm_fraction: float = 0.75  # calm: below this share of the limit
    calm_samples: int = 3


def adjust(cur: Limits, target: int, rss_mb: float, t: Thresholds = Thresholds()) -> Limits:
    """Next limits from the process's resident memory ``rss_mb``; ``target``: the batch size
    the worker would use unconstrained."""
    if rss_mb > t.mem_limit_mb:
        return Limits(max(1, cur.batch_size // 2), 0)
    if rss_mb < t.calm_fraction * t.mem_limit_mb:
        calm = cur.calm + 1
        if calm >= t.calm_samples and cur.batch_size < target:
            return Limits(min(target, cur.batch_size * 2), 0)
        return replace(cur, calm=calm)
    return replace(cur, calm=0)


class MemoryGuard:
    """Samples this process every ``interval_s`` in a thread; ``batch_size(chunk)`` is read
    lock-free. ``target``: the batch size unconstrained (the auto-tuner's pick)."""

    def __init__(self, target: int, interval_s: float = 1.0, thresholds: Thresholds = Thresholds()):
        self.target = max(1, target)
        self.limits = Limits(self.target)
        self.interval_s = interval_s
        self.thresholds = thresholds
        self.changes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()

    def set_target(self, batch_size: int) -> None:
        self.target = max(1, batch_size)
        self.limits = Limits(self.target)

    def batch_size(self, chunk: int) -> int:
        return max(1, min(chunk, self.limits.batch_size))

    def sample(self, rss_mb: float | None = None) -> None:
        rss = self._process.memory_info().rss / 2**20 if rss_mb is None else rss_mb
        new = adjust(self.limits, self.target, rss, self.thresholds)
        if new.batch_size != self.limits.batch_size:
            self.changes += 1
            log.info("worker memory %.0f MB (limit %.0f): batch size %d -> %d", rss,
                     self.thresholds.mem_limit_mb, self.limits.batch_size, new.batch_size)
        self.limits = new

    def start(self) -> MemoryGuard:
        def loop():
            while not self._stop.wait(self.interval_s):
                self.sample()
        threading.Thread(target=loop, name="batch-memory", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

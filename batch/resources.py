"""Resource monitor (psutil): over 90 % CPU or 85 % memory the worker halves its batch size
and concurrency; after a few calm samples it steps them back up towards the configured
values. The rule is a pure function (``adjust``) so it is tested without loading a machine.
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
    concurrency: int
    calm: int = 0  # consecutive calm samples


@dataclass(frozen=True)
class Thresholds:
    cpu_high: float = 90.0
    mem_high: float = 85.0
    cpu_calm: float = 75.0
    mem_calm: float = 75.0
    calm_samples: int = 3


def adjust(cur: Limits, target: Limits, cpu: float, mem: float, t: Thresholds = Thresholds()) -> Limits:
    if cpu > t.cpu_high or mem > t.mem_high:
        return Limits(max(1, cur.batch_size // 2), max(1, cur.concurrency // 2), 0)
    if cpu < t.cpu_calm and mem < t.mem_calm:
        calm = cur.calm + 1
        if calm >= t.calm_samples and (cur.batch_size, cur.concurrency) != (target.batch_size, target.concurrency):
            return Limits(min(target.batch_size, cur.batch_size * 2),
                          min(target.concurrency, cur.concurrency + 1), 0)
        return replace(cur, calm=calm)
    return replace(cur, calm=0)


class ResourceMonitor:
    """Samples the machine every ``interval_s`` in a thread; ``limits`` is read lock-free."""

    def __init__(self, batch_size: int, concurrency: int, interval_s: float = 1.0,
                 thresholds: Thresholds = Thresholds()):
        self.target = Limits(batch_size, concurrency)
        self.limits = self.target
        self.interval_s = interval_s
        self.thresholds = thresholds
        self.changes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gate = threading.Condition()
        self._running = 0

    def set_target(self, batch_size: int, concurrency: int) -> None:
        self.target = Limits(batch_size, concurrency)
        self.limits = self.target

    def sample(self) -> None:
        cpu, mem = psutil.cpu_percent(interval=None), psutil.virtual_memory().percent
        new = adjust(self.limits, self.target, cpu, mem, self.thresholds)
        if (new.batch_size, new.concurrency) != (self.limits.batch_size, self.limits.concurrency):
            self.changes += 1
            log.info("cpu %.0f%% mem %.0f%%: batch %d -> %d, concurrency %d -> %d", cpu, mem,
                     self.limits.batch_size, new.batch_size, self.limits.concurrency, new.concurrency)
        self.limits = new
        with self._gate:
            self._gate.notify_all()

    def start(self) -> ResourceMonitor:
        psutil.cpu_percent(interval=None)  # the first call only primes the counter

        def loop():
            while not self._stop.wait(self.interval_s):
                self.sample()
        self._thread = threading.Thread(target=loop, name="batch-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    # concurrency gate: a chunk waits here while the worker runs as many as it may
    def __enter__(self):
        with self._gate:
            self._gate.wait_for(lambda: self._running < self.limits.concurrency)
            self._running += 1
        return self

    def __exit__(self, *exc):
        with self._gate:
            self._running -= 1
            self._gate.notify_all()

"""The queue half of the congestion signal: the mean time a request waited in Triton's
queues lately, from Triton's model statistics (cumulative queue ns and counts per model,
``SyncTriton.timings``), summed over the models one request of the job's kind goes through.

One statistics call per ``min_interval_s`` at most, whatever the number of chunks; between
calls the last value stands. When Triton cannot say (statistics refused, a model without
requests meanwhile) the answer is None and the controller steers by latency alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from inference import InferenceError
from inference.results import ModelTiming
from inference.sync import SyncTriton

log = logging.getLogger("batch.triton_signal")


class QueueSignal:
    def __init__(self, triton: SyncTriton, models: Sequence[str], min_interval_s: float = 0.25):
        self.triton = triton
        self.models = tuple(models)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._prev: dict[str, ModelTiming] | None = None
        self._at = float("-inf")
        self._last: float | None = None
        self._warned = False

    def read(self) -> float | None:
        """Seconds of queue per request since the previous read (None: unknown)."""
        with self._lock:
            now = time.monotonic()
            if now - self._at < self.min_interval_s:
                return self._last
            self._at = now
            try:
                cur = self.triton.timings()
            except InferenceError as e:
                if not self._warned:
                    log.warning("Triton's statistics unavailable (%s): concurrency follows latency alone", e)
                    self._warned = True
                self._prev, self._last = None, None
                return None
            self._last = queue_per_request(self._prev, cur, self.models) if self._prev is not None else None
            self._prev = cur
            return self._last


def queue_per_request(before: dict[str, ModelTiming], after: dict[str, ModelTiming],
                      models: Sequence[str]) -> float | None:
    """Mean queue seconds per request between two readings, summed over ``models`` (a request
    waits in each step's queue); None when none of them served a request meanwhile. A model
    reloaded meanwhile (its counters went back) is left out."""
    total, seen = 0.0, False
    for m in models:
        a, b = before.get(m), after.get(m)
        if a is None or b is None or b.requests <= a.requests or b.queue_ns < a.queue_ns:
            continue
        total += (b.queue_ns - a.queue_ns) / (b.requests - a.requests) / 1e9
        seen = True
    return total if seen else None

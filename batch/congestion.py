"""Adaptive concurrency: how many chunks a worker keeps in Triton at once, steered by what
Triton reports, as congestion control steers a TCP window (AIMD).

Signals, one sample per Triton batch: its round trip per image (the client's clock) and the
mean time a request waited in Triton's queues meanwhile (Triton's model statistics, read by
``batch.triton_signal``). Not host CPU: on a machine shared with Triton, CPU measures
Triton's own work, and backing off then only idles Triton.

Rule, once per *epoch* (``2 x limit`` samples, at least ``min_samples``, all of batches
started under the current limit):

- **decrease** (multiplicative, x ``beta``) when the epoch's latency per image exceeds
  ``latency_factor`` x the baseline *at the same limit*, or its queue time exceeds
  ``queue_factor`` x the same limit's baseline queue (with a floor, ``queue_floor_s``, so a
  near-zero baseline is not a hair trigger): the same work got slower, so somebody else (the
  line) needs Triton. Baselines are the lowest values of that limit's last
  ``baseline_epochs`` epochs within the last ``baseline_window`` decisions, so they follow a
  lasting change of load instead of holding a record low. They are kept per limit because latency per image *should* grow with the
  limit once Triton is full (Little's law): one chunk of 8 requests already fills both CPU
  detector instances, so a second chunk in flight doubles each image's wait for ~10 % more
  throughput. Compared across limits, that read as congestion and kept one worker at 1-2
  chunks, below its ceiling.
- **increase** (additive, +1) is an experiment: the first epoch, then each epoch whose
  images/s beat the epoch before it (one limit lower) by more than ``min_gain``.
- **retreat** (-1) when the experiment bought nothing: the limit goes back, and the one
  that bought nothing is not tried again until a probe.
- otherwise **hold**. After ``probe_epochs`` holds it tries +1 again (the load may have
  changed), which is again an experiment.

Bounds ``lo..hi``; the auto-tuner's pick seeds ``limit``. Pure and deterministic: time comes
in with the samples, so the unit tests replay sequences without a clock.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

TRACE_KEEP = 10_000


@dataclass(frozen=True)
class Sample:
    """One Triton batch of ``items`` images: sent at ``start``, answered at ``end`` (seconds
    on any monotonic clock), ``queue_s`` the mean queue time per request Triton reported
    over that time (None: not known)."""
    start: float
    end: float
    items: int
    queue_s: float | None = None


@dataclass(frozen=True)
class Step:
    """One decision, for the trace: at ``t`` the limit became ``limit`` because of ``reason``
    (start, increase, hold, probe, retreat, latency, queue)."""
    t: float
    limit: int
    reason: str
    items_per_s: float
    latency_ms: float
    queue_ms: float | None


@dataclass
class AIMD:
    seed: int
    lo: int = 1
    hi: int = 6
    latency_factor: float = 1.8
    queue_factor: float = 3.0
    queue_floor_s: float = 0.010
    beta: float = 0.7
    min_gain: float = 0.04
    min_samples: int = 4
    baseline_epochs: int = 8
    baseline_window: int = 32
    probe_epochs: int = 4
    limit: int = field(init=False)
    epoch: int = field(init=False, default=0)
    decisions: int = field(init=False, default=0)
    trace: list[Step] = field(init=False, default_factory=list)  # the last TRACE_KEEP steps

    def __post_init__(self) -> None:
        if not 1 <= self.lo <= self.hi:
            raise ValueError(f"bounds must satisfy 1 <= lo <= hi, got {self.lo}..{self.hi}")
        self.limit = min(self.hi, max(self.lo, int(self.seed)))
        self._samples: list[Sample] = []
        # per limit: (decision number, value) of its recent epochs' latency per image / queue time
        self._lat: dict[int, deque[tuple[int, float]]] = {}
        self._queue: dict[int, deque[tuple[int, float]]] = {}
        self._last_rate: float | None = None  # the previous epoch's images/s
        self._trial = False  # this epoch runs at a limit just raised by one: did it pay?
        self._cap: int | None = None  # a limit that bought nothing: not retried before a probe
        self._holds = 0
        self._lock = threading.Lock()

    @property
    def epoch_size(self) -> int:
        return max(self.min_samples, 2 * self.limit)

    def observe(self, sample: Sample, epoch: int | None = None) -> int:
        """Feed one batch's sample; ``epoch``: the value of :attr:`epoch` when the batch was
        sent (a batch sent under an older limit says nothing about this one and is
        dropped). Returns the limit now in force."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return self.limit
            if sample.items <= 0 or sample.end <= sample.start:
                return self.limit
            if not self.trace:
                self.trace.append(Step(sample.start, self.limit, "start", 0.0, 0.0, None))
            self._samples.append(sample)
            if len(self._samples) >= self.epoch_size:
                self._decide()
            return self.limit

    def _decide(self) -> None:
        s = self._samples
        span = max(x.end for x in s) - min(x.start for x in s)
        rate = sum(x.items for x in s) / span
        lat = statistics.median((x.end - x.start) / x.items for x in s)
        queues = [x.queue_s for x in s if x.queue_s is not None]
        queue = statistics.median(queues) if queues else None
        base_lat = self._baseline(self._lat, lat)
        base_queue = None if queue is None else self._baseline(self._queue, queue)
        prev, trial = self._last_rate, self._trial
        up = self.limit + 1 if self.limit < self.hi and (self._cap is None or self.limit + 1 < self._cap) \
            else self.limit

        if lat > self.latency_factor * base_lat:
            reason, new = "latency", self._decreased()
        elif queue is not None and base_queue is not None and \
                queue > self.queue_factor * max(base_queue, self.queue_floor_s):
            reason, new = "queue", self._decreased()
        elif prev is None or (trial and rate > prev * (1 + self.min_gain)):
            reason, new = ("increase", up) if up > self.limit else ("hold", self.limit)
        elif trial and self.limit > self.lo:
            reason, new = "retreat", self.limit - 1
            self._cap = self.limit
        elif self._holds + 1 >= self.probe_epochs and self.limit < self.hi:
            reason, new = "probe", self.limit + 1
            self._cap = None
        else:
            reason, new = "hold", self.limit
        self._holds = self._holds + 1 if reason == "hold" else 0
        self._trial = new == self.limit + 1
        if new != self.limit:
            self.epoch += 1  # batches in flight now were sent under the old limit
        self.limit = new
        self._last_rate = rate
        self.trace.append(Step(max(x.end for x in s), new, reason, round(rate, 2), round(lat * 1000, 2),
                               None if queue is None else round(queue * 1000, 2)))
        if len(self.trace) > TRACE_KEEP:  # a worker runs for months: keep the recent past
            del self.trace[: TRACE_KEEP // 2]
        self.decisions += 1
        self._samples = []

    def _baseline(self, history: dict[int, deque[tuple[int, float]]], value: float) -> float:
        """This limit's baseline, ``value`` counted in: the lowest of its last
        ``baseline_epochs`` epochs within ``baseline_window`` decisions (a limit visited
        rarely, by probes, must not keep a low from hours ago, when the line was idle)."""
        h = history.setdefault(self.limit, deque(maxlen=self.baseline_epochs))
        h.append((self.decisions, value))
        return min(v for n, v in h if n >= self.decisions - self.baseline_window)

    def _decreased(self) -> int:
        return max(self.lo, min(self.limit - 1, int(self.limit * self.beta)))

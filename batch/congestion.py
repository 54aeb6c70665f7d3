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
  images/s beat the epoch before it (one limit lower) by more than ``min_gain``. Images/s
  are counted over the time between two decisions, from every answer in it.
- **retreat** (-1) when the experiment bought nothing: the limit goes back, and the one
  that bought nothing is not tried again until a probe.
- otherwise **hold**. After ``probe_epochs`` holds it probes (each probe that came back
  doubles the wait before the next, up to 8x; a change of load resets it), alternately one more and one
  fewer (the load may have changed), judged against the mean of the epochs at the limit it
  left: one more is kept if it gains ``min_gain``, one fewer (**probe_down**) is kept
  (**trim**) if it loses less than ``min_gain``, else it goes back up (**restore**). The
  downward probe keeps a noisy epoch that happened to win from ratcheting the limit up for
  good: fewer chunks in flight at the same rate leave more room to the line.

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
    (start, increase, hold, probe, retreat, probe_down, trim, restore, latency, queue)."""
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
        self._here: list[float] = []  # images/s of the epochs at this limit since it was reached
        self._trial = 0  # +1 / -1: this epoch runs one limit above / below where it was: did it pay?
        self._ref = 0.0  # the rate the trial is judged against (where it came from)
        self._up_next = True  # probes alternate: up, then down
        self._probe_every = self.probe_epochs  # doubles after each probe that came back (to 8x)
        # throughput is measured over the time between decisions, from every answer in it
        # (batches sent under the old limit too: they are work Triton did). Not from the
        # epoch's own first start: batches are pipelined (one goes in as one comes out), so
        # that span would charge the pipeline's fill to the epoch and read a limit L as
        # N / (N - 1 + L) of its real rate (0.8x at 2 chunks), and a gain as a loss.
        self._window_start: float | None = None
        self._window_items = 0
        self._holds = 0
        self._lock = threading.Lock()

    @property
    def epoch_size(self) -> int:
        """Batches per decision; a trial's epoch is twice as long: its one judgment carries it."""
        return max(self.min_samples, 2 * self.limit) * (2 if self._trial else 1)

    def observe(self, sample: Sample, epoch: int | None = None) -> int:
        """Feed one batch's sample; ``epoch``: the value of :attr:`epoch` when the batch was
        sent (a batch sent under an older limit says nothing about this one and is
        dropped). Returns the limit now in force."""
        with self._lock:
            if sample.items <= 0 or sample.end <= sample.start:
                return self.limit
            if self._window_start is None:
                self._window_start = sample.start
            self._window_items += sample.items
            if epoch is not None and epoch != self.epoch:
                return self.limit
            if not self.trace:
                self.trace.append(Step(sample.start, self.limit, "start", 0.0, 0.0, None))
            self._samples.append(sample)
            if len(self._samples) >= self.epoch_size:
                self._decide()
            return self.limit

    def _decide(self) -> None:
        s = self._samples
        now = max(x.end for x in s)  # the answer that completed the epoch
        start = now if self._window_start is None else self._window_start
        rate = self._window_items / max(now - start, 1e-6)
        self._window_start, self._window_items = now, 0
        lat = statistics.median((x.end - x.start) / x.items for x in s)
        queues = [x.queue_s for x in s if x.queue_s is not None]
        queue = statistics.median(queues) if queues else None
        base_lat = self._baseline(self._lat, lat)
        base_queue = None if queue is None else self._baseline(self._queue, queue)
        trial, ref, here = self._trial, self._ref, self._here
        self._trial = 0
        gain = self.min_gain

        if lat > self.latency_factor * base_lat:
            reason, new = "latency", self._decreased()
        elif queue is not None and base_queue is not None and \
                queue > self.queue_factor * max(base_queue, self.queue_floor_s):
            reason, new = "queue", self._decreased()
        elif self.decisions == 0 or (trial > 0 and rate > ref * (1 + gain)):
            reason, new = ("increase", self.limit + 1) if self.limit < self.hi else ("hold", self.limit)
        elif trial > 0:  # one more in flight bought nothing: back
            reason, new = "retreat", self.limit - 1
        elif trial < 0:  # one fewer: as fast (within the gain) is better, the line gets the rest
            reason, new = ("trim", self.limit) if rate >= ref * (1 - gain) else ("restore", self.limit + 1)
        elif self._holds + 1 >= self._probe_every and self.hi > self.lo:
            # the load may have changed: try one more, or (every other time) one fewer, against
            # the mean of the epochs here (one epoch alone is noisy enough to ratchet upwards)
            down = (not self._up_next and self.limit > self.lo) or self.limit >= self.hi
            self._up_next = down
            reason, new = ("probe_down", self.limit - 1) if down else ("probe", self.limit + 1)
        else:
            reason, new = "hold", self.limit
        if reason in ("retreat", "restore"):  # a probe that came back: the next one waits longer
            self._probe_every = min(8 * self.probe_epochs, 2 * self._probe_every)
        elif reason in ("latency", "queue", "trim") or (reason == "increase" and trial > 0):
            self._probe_every = self.probe_epochs  # the load moved: look again soon
        if reason in ("increase", "probe", "probe_down"):
            self._trial = 1 if new > self.limit else -1
            self._ref = rate if reason == "increase" else statistics.mean(here + [rate])
        self._holds = self._holds + 1 if reason in ("hold", "trim") else 0
        self._here = (here + [rate])[-8 * self.probe_epochs:] if new == self.limit else []  # bounded: lo == hi never probes
        if new != self.limit:
            self.epoch += 1  # batches in flight now were sent under the old limit
        self.limit = new
        self.trace.append(Step(now, new, reason, round(rate, 2), round(lat * 1000, 2),
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

"""The worker's chunks on their way through Triton, gated by the congestion controller
(``batch.congestion.AIMD``):

- ``staged``: a chunk reading its files, waiting for Triton, or in Triton. At most
  ``limit + read_ahead``: the next chunk's files are read and checked while Triton computes
  the current ones (a prefetch of one chunk), so it goes in the moment a slot frees.
- ``flight``: a batch in Triton. At most ``limit``; a batch leaves its slot the moment Triton
  answers, before its results are written, so the chunk behind it goes in without a gap.

Each answered batch is one sample for the controller (``report``); every change of the
limit wakes the waiting chunks and goes to ``on_step`` (the worker's trace file, its gauge).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from batch.congestion import AIMD, Sample, Step


@dataclass
class Ticket:
    """One batch's trip: when it went in, under which epoch of the controller, when it came back."""
    start: float
    epoch: int
    end: float = 0.0


class InFlight:
    def __init__(self, controller: AIMD, read_ahead: int = 1, on_step: Callable[[Step], None] | None = None):
        self.controller = controller
        self.read_ahead = read_ahead
        self.on_step = on_step
        self._cond = threading.Condition()
        self.staged_now = 0
        self.flying_now = 0

    def use(self, controller: AIMD) -> None:
        """Another controller from now on (the tuner's probe pins the concurrency it measures)."""
        with self._cond:
            self.controller = controller
            self._cond.notify_all()

    @contextmanager
    def staged(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.staged_now < self.controller.limit + self.read_ahead)
            self.staged_now += 1
        try:
            yield
        finally:
            with self._cond:
                self.staged_now -= 1
                self._cond.notify_all()

    @contextmanager
    def flight(self) -> Iterator[Ticket]:
        with self._cond:
            self._cond.wait_for(lambda: self.flying_now < self.controller.limit)
            self.flying_now += 1
            ticket = Ticket(time.monotonic(), self.controller.epoch)
        try:
            yield ticket
        finally:
            ticket.end = time.monotonic()
            with self._cond:
                self.flying_now -= 1
                self._cond.notify_all()

    def report(self, ticket: Ticket, items: int, queue_s: float | None) -> None:
        """An answered batch of ``items`` requests; ``queue_s`` from Triton's statistics."""
        with self._cond:
            c = self.controller
            first, decisions = not c.trace, c.decisions
            c.observe(Sample(ticket.start, ticket.end, items, queue_s), ticket.epoch)
            new = c.trace[:1] if first and c.trace else []
            if c.decisions != decisions:
                new.append(c.trace[-1])
            self._cond.notify_all()
        if self.on_step is not None:
            for step in new:
                self.on_step(step)

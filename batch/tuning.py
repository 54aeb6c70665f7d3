"""Auto-tuner: measures items/s over (batch size, concurrency) through the engine's own path
against the live server (``probe.EngineProbe``) and records the best point in ``system_config`` (key ``batch.tuning``); workers and new
jobs use it from then on.

Search: hill-climbing from the configured default over the grid's neighbours (batch x2 / /2,
concurrency +1 / -1), moving while a neighbour is faster by more than ``min_gain``. It visits a
handful of points instead of the whole grid; ``sweep`` measures the whole grid so the
benchmark can check the pick against the true best.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy.orm import sessionmaker

from store.models import SystemConfig, utcnow

KEY = "batch.tuning"
BATCH_SIZES = (1, 2, 4, 8, 16)
CONCURRENCIES = (1, 2, 3, 4, 6)


@dataclass(frozen=True)
class Point:
    batch_size: int
    concurrency: int
    items_per_s: float


def current(sessions: sessionmaker, settings) -> tuple[int, int]:
    """The recorded pick, or the configured defaults."""
    try:
        with sessions() as s:
            row = s.get(SystemConfig, KEY)
        if row is not None:
            v = json.loads(row.value)
            return int(v["batch_size"]), int(v["concurrency"])
    except Exception:  # noqa: BLE001 - no table yet / database down: defaults are fine
        pass
    return settings.batch_chunk_size, settings.batch_concurrency


def record(sessions: sessionmaker, best: Point, points: Sequence[Point]) -> dict:
    value = {**asdict(best), "measured_at": utcnow().isoformat() + "Z",
             "points": [asdict(p) for p in points]}
    with sessions.begin() as s:
        row = s.get(SystemConfig, KEY)
        if row is None:
            s.add(SystemConfig(key=KEY, value=json.dumps(value)))
        else:
            row.value = json.dumps(value)
    return value


Rate = Callable[[int, int, int], float]  # (batch size, concurrency, items) -> items/s


class AutoTuner:
    """``rate`` measures one setting; ``batch.probe.EngineProbe`` runs the worker's
    real path (claim, read, Triton, write) so the pick is the engine's best, not Triton's."""

    def __init__(self, rate: Rate, items_per_point: int = 64, batch_sizes: Sequence[int] = BATCH_SIZES,
                 concurrencies: Sequence[int] = CONCURRENCIES, min_gain: float = 0.03):
        self.rate = rate
        self.items = items_per_point
        self.batch_sizes = list(batch_sizes)
        self.concurrencies = list(concurrencies)
        self.min_gain = min_gain
        self.points: dict[tuple[int, int], Point] = {}

    def point(self, b: int, c: int) -> Point:
        if (b, c) not in self.points:
            self.points[(b, c)] = Point(b, c, round(self.rate(b, c, max(self.items, b * c * 2)), 2))
        return self.points[(b, c)]

    def _neighbours(self, b: int, c: int) -> list[tuple[int, int]]:
        bi, ci = self.batch_sizes.index(b), self.concurrencies.index(c)
        out = []
        for db, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            if 0 <= bi + db < len(self.batch_sizes) and 0 <= ci + dc < len(self.concurrencies):
                out.append((self.batch_sizes[bi + db], self.concurrencies[ci + dc]))
        return out

    def _nearest(self, values: Sequence[int], v: int) -> int:
        return min(values, key=lambda x: (abs(x - v), x))

    def tune(self, start: tuple[int, int] = (8, 2)) -> Point:
        self.rate(2, 1, 4)  # warm the connections and the models
        best = self.point(self._nearest(self.batch_sizes, start[0]), self._nearest(self.concurrencies, start[1]))
        while True:
            cands = [self.point(b, c) for b, c in self._neighbours(best.batch_size, best.concurrency)]
            top = max(cands, key=lambda p: p.items_per_s)
            if top.items_per_s <= best.items_per_s * (1 + self.min_gain):
                return best
            best = top

    def sweep(self) -> Point:
        self.rate(2, 1, 4)
        pts = [self.point(b, c) for b in self.batch_sizes for c in self.concurrencies]
        return max(pts, key=lambda p: p.items_per_s)

"""Shadow before promote: live frames mirrored to a candidate detector version.

While ``pcb_detector_shadow`` is loaded in Triton (``python -m serving.admin shadow`` or
``POST /admin/models/{model}/shadow``), each answered side is offered here with the
served answer. A share of them (``SHADOW_SHARE``) goes into a bounded queue; one task
sends them to the shadow (its own instance, under SCHED_IDLE), compares, and stores both answers
(``shadow_results``). The line never waits: ``offer`` is a ``put_nowait``, a full queue
drops the frame (counted), and a shadow that fails or is slow costs only its own queue.
``report`` gives what the promotion floor reads: verdict agreement per side (a board agrees
when both its sides do, so this is the stricter measure), per-class
differences, latencies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from inference.contract import shadow_model
from inference.results import SideResult
from pcb import taxonomy
from store.models import ShadowResult, utcnow

log = logging.getLogger("gateway.shadow")
REFRESH_S = 5.0  # how often the worker looks for a shadow being loaded or unloaded
# the report reads the newest this many rows of a version: enough for a promotion decision,
# few enough that building it (in a thread of a gateway worker) stays in the milliseconds
REPORT_ROWS = 5_000


@dataclass
class _Frame:
    inspection_id: str
    image: bytes
    live: SideResult
    live_ms: float | None


@dataclass
class ShadowStats:
    offered: int = 0
    mirrored: int = 0
    dropped: int = 0  # queue full: the line came first
    failed: int = 0  # the shadow or the database refused
    version: int | None = None
    by_version: dict = field(default_factory=dict)


def _classes(side: SideResult) -> dict[str, int]:
    return dict(Counter(d.class_name for d in side.detections))


def _detections(side: SideResult) -> list[dict]:
    return [{"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)], "class": d.class_name,
             "confidence": round(d.confidence, 4)} for d in side.detections]


class ShadowMirror:
    def __init__(self, triton, sessions, model: str = "pcb_detector", share: float = 1.0, queue_size: int = 32):
        self.triton, self.sessions, self.model = triton, sessions, model
        self.share = share
        self.queue: asyncio.Queue[_Frame] = asyncio.Queue(queue_size)
        self.stats = ShadowStats()
        self._tasks: list[asyncio.Task] = []

    @property
    def active(self) -> bool:
        return self.stats.version is not None

    def offer(self, inspection_id: str, image: bytes, live: SideResult, live_ms: float | None) -> None:
        """Called on the line's path after the answer is built: never blocks, never raises."""
        if not self.active or self.share <= 0 or random.random() >= self.share:
            return
        self.stats.offered += 1
        try:
            self.queue.put_nowait(_Frame(inspection_id, image, live, live_ms))
        except asyncio.QueueFull:
            self.stats.dropped += 1

    async def refresh(self) -> None:
        version = await self.triton.transport.model_version(shadow_model(self.model))
        if version != self.stats.version:
            log.info("shadow of %s: version %s", self.model, version)
            while not self.queue.empty():  # frames for a shadow that is gone (or another version)
                self.queue.get_nowait()
        self.stats.version = version

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # noqa: BLE001 - looked at again next round
                log.warning("shadow refresh failed: %r", e)
            await asyncio.sleep(REFRESH_S)

    async def _work(self) -> None:
        while True:
            frame = await self.queue.get()
            try:
                await self._mirror(frame)
            except Exception as e:  # noqa: BLE001 - a shadow's trouble is never the line's
                self.stats.failed += 1
                log.warning("shadow mirror failed: %r", e)

    async def _mirror(self, frame: _Frame) -> None:
        shadow, shadow_ms = await self.triton.transport.inspect_with(shadow_model(self.model), frame.image)
        tax = taxonomy.load()
        row = ShadowResult(id=str(uuid.uuid4()), inspection_id=frame.inspection_id, model=self.model,
                           live_version=frame.live.detector_version, shadow_version=shadow.detector_version,
                           live_verdict=tax.verdict(frame.live.verdict_code).name,
                           shadow_verdict=tax.verdict(shadow.verdict_code).name,
                           agree=frame.live.verdict_code == shadow.verdict_code,
                           live_classes=_classes(frame.live), shadow_classes=_classes(shadow),
                           live_detections=_detections(frame.live), shadow_detections=_detections(shadow),
                           live_ms=frame.live_ms, shadow_ms=round(shadow_ms, 2), created_at=utcnow())
        await asyncio.to_thread(self._store, row)
        self.stats.mirrored += 1

    def _store(self, row: ShadowResult) -> None:
        with self.sessions() as s:
            s.add(row)
            s.commit()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._refresh_loop(), name="shadow-refresh"),
                       asyncio.create_task(self._work(), name="shadow-mirror")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        self._tasks = []


def report(sessions, model: str, version: int | None) -> dict:
    """The shadow report for ``version`` (default: the newest shadowed one) from the stored
    answers: sides compared, verdict agreement, per-class detection counts (served vs
    shadow, and the shadow's difference), verdict pairs that disagree, latency percentiles."""
    with sessions() as s:
        if version is None:
            version = s.scalars(select(ShadowResult.shadow_version).where(ShadowResult.model == model)
                                .order_by(ShadowResult.created_at.desc()).limit(1)).first()
        rows = [] if version is None else list(s.execute(
            select(ShadowResult.agree, ShadowResult.live_verdict, ShadowResult.shadow_verdict,
                   ShadowResult.live_classes, ShadowResult.shadow_classes, ShadowResult.live_ms,
                   ShadowResult.shadow_ms, ShadowResult.live_version)
            .where(ShadowResult.model == model, ShadowResult.shadow_version == version)
            .order_by(ShadowResult.created_at.desc()).limit(REPORT_ROWS)))
    live: Counter[str] = Counter()
    cand: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for r in rows:
        live.update(r.live_classes or {})
        cand.update(r.shadow_classes or {})
        if not r.agree:
            pairs[(r.live_verdict, r.shadow_verdict)] += 1
    names = [c for c in taxonomy.load().class_names if live[c] or cand[c]]

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 2) if values else None

    shadow_ms = [r.shadow_ms for r in rows]
    live_ms = [r.live_ms for r in rows if r.live_ms is not None]
    return {
        "model": model, "version": version, "samples": len(rows),
        "agreement": round(sum(r.agree for r in rows) / len(rows), 4) if rows else None,
        "live_versions": sorted({r.live_version for r in rows}),
        "classes": [{"class": c, "served": live[c], "shadow": cand[c], "difference": cand[c] - live[c]}
                    for c in names],
        "disagreements": [{"served": a, "shadow": b, "count": n} for (a, b), n in pairs.most_common()],
        "latency_ms": {"shadow_p50": pct(shadow_ms, 50), "shadow_p95": pct(shadow_ms, 95),
                       "served_p50": pct(live_ms, 50), "served_p95": pct(live_ms, 95)},
    }

"""The line as the plant runs it, for the benchmarks: two registered cameras, each board's
left and right frames posted to ``/v1/inspect`` together, boards on a fixed clock (open loop:
a slow answer does not slow the conveyor, so queueing shows in the numbers). Every frame's
latency (request sent -> answer) and every board's (both sides answered) is kept, with the
gateway's own account of the slowest frames.

``EdgeLine`` drives the same boards through the Pi's own sender instead (at most two frames
on the wire per camera, a newer frame replacing one still waiting): past the line's capacity
frames are skipped, as on the Pi, rather than queued without end."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from pi_edge.config import EdgeConfig
from pi_edge.sender import Frame, Sender
from pi_edge.spool import Spool

BUDGET_MS = 300  # seed 001: a board decided in < 300 ms
ADMIN = {"Authorization": "Bearer bench-line-admin"}


@dataclass
class LineRun:
    frames_ms: list[float] = field(default_factory=list)
    # the gateway's own account of each frame: (client ms, inference, pairing wait, total)
    parts: list[tuple[float, float, float, float]] = field(default_factory=list)
    boards_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # frames a camera dropped because newer ones came (EdgeLine only)
    sent_at: list[float] = field(default_factory=list)  # each frame's send time (perf_counter), as frames_ms
    # the gateway's durable outbox writes during the run (gateway_outbox_write_seconds): how
    # many, and how many took over 50 ms, so a slow disk is told apart from slow inference
    outbox_writes: int = 0
    outbox_slow: int = 0
    in_flight_limit: int = 0  # requests each camera's sender kept on the wire (EdgeLine only)

    @classmethod
    def pooled(cls, runs: list[LineRun]) -> LineRun:
        """Several runs of one scenario as one sample (a p99 over rounds, not one round's max)."""
        return cls(frames_ms=[x for r in runs for x in r.frames_ms], parts=[x for r in runs for x in r.parts],
                   boards_ms=[x for r in runs for x in r.boards_ms], errors=[x for r in runs for x in r.errors],
                   skipped=sum(r.skipped for r in runs), outbox_writes=sum(r.outbox_writes for r in runs),
                   outbox_slow=sum(r.outbox_slow for r in runs))

    def summary(self) -> dict:
        f = np.array(self.frames_ms or [np.nan])
        b = np.array(self.boards_ms or [np.nan])
        slow = sorted(self.parts, reverse=True)[:max(1, len(self.parts) // 100)]
        tail = np.mean(np.array(slow), axis=0) if slow else [np.nan] * 4
        return {"tail_client": float(tail[0]), "tail_inference": float(tail[1]), "tail_pairing": float(tail[2]),
                "tail_gateway_total": float(tail[3]), "boards": len(self.boards_ms), "frame_p50": float(np.percentile(f, 50)),
                "frame_p99": float(np.percentile(f, 99)), "board_p50": float(np.percentile(b, 50)),
                "board_p99": float(np.percentile(b, 99)), "board_max": float(np.max(b)),
                "over_budget": int((b > BUDGET_MS).sum()), "errors": len(self.errors),
                "skipped": self.skipped, "outbox_writes": self.outbox_writes, "outbox_over_50ms": self.outbox_slow,
                "in_flight_limit": self.in_flight_limit}


SLOW_WRITE = "0.05"  # a bucket bound of gateway_outbox_write_seconds


async def outbox_writes(http: httpx.AsyncClient, url: str) -> tuple[int, int]:
    """(outbox writes so far, of which over 50 ms) from the gateway's /metrics."""
    total = fast = 0
    for line in (await http.get(f"{url}/metrics", headers=ADMIN)).text.splitlines():
        if line.startswith("gateway_outbox_write_seconds_count"):
            total = int(float(line.split()[-1]))
        elif line.startswith(f'gateway_outbox_write_seconds_bucket{{le="{SLOW_WRITE}"}}'):
            fast = int(float(line.split()[-1]))
    return total, total - fast


def register(url: str) -> dict[str, str]:
    """The two bench cameras, registered once per gateway database: side -> API key."""
    keys = {}
    for dev, side, gpio in (("bench-left", "left", True), ("bench-right", "right", False)):
        r = httpx.post(f"{url}/admin/devices", headers=ADMIN, json={"device_id": dev, "side": side, "drives_gpio": gpio})
        r.raise_for_status()
        keys[side] = r.json()["api_key"]
    return keys


class Line:
    """Two registered cameras posting each board's frames on a fixed clock."""

    def __init__(self, url: str, images: list[bytes], boards_per_s: float):
        self.url, self.images, self.period = url, images, 1.0 / boards_per_s
        self.keys: dict[str, str] = {}
        self.n = 0

    def register(self) -> None:
        self.keys = register(self.url)

    async def _frame(self, http: httpx.AsyncClient, side: str, board: str, img: bytes, run: LineRun) -> float:
        t0 = time.perf_counter()
        r = await http.post(f"{self.url}/v1/inspect", data={"board_id": board},
                            files={"image": (f"{side}.jpg", img, "image/jpeg")},
                            headers={"X-Device-Id": f"bench-{side}", "X-API-Key": self.keys[side],
                                     "Idempotency-Key": f"{board}:{side}"})
        ms = (time.perf_counter() - t0) * 1000
        run.sent_at.append(t0)
        if r.status_code != 200:
            run.errors.append(f"{r.status_code} {r.text[:100]}")
        else:
            t = r.json()["timings_ms"]
            run.parts.append((ms, t["inference"], t["pairing_wait"], t["total"]))
        run.frames_ms.append(ms)
        return ms

    async def _board(self, http: httpx.AsyncClient, run: LineRun) -> None:
        self.n += 1
        board = f"BENCH-{os.getpid()}-{self.n:06d}"
        imgs = self.images[self.n % len(self.images)], self.images[(self.n + 7) % len(self.images)]
        ms = await asyncio.gather(*(self._frame(http, s, board, i, run) for s, i in zip(("left", "right"), imgs)))
        run.boards_ms.append(max(ms))

    async def run(self, until) -> LineRun:
        """Boards on the clock until ``until()`` is true; every board's answer awaited."""
        run, pending = LineRun(), []
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            writes, slow = await outbox_writes(http, self.url)
            next_at = time.perf_counter()
            while not until():
                pending.append(asyncio.create_task(self._board(http, run)))
                next_at += self.period
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await asyncio.gather(*pending)
            writes_after, slow_after = await outbox_writes(http, self.url)
        run.outbox_writes, run.outbox_slow = writes_after - writes, slow_after - slow
        return run


def for_seconds(seconds: float):
    end = time.perf_counter() + seconds
    return lambda: time.perf_counter() >= end


class EdgeLine:
    """Both cameras through ``pi_edge.sender.Sender``, boards on a fixed clock. A board's
    latency runs from its capture to its second answer, so time a frame waited in the
    sender's mailbox counts; a board with a skipped or failed side has no latency and shows
    in ``skipped`` or ``errors``."""

    def __init__(self, url: str, keys: dict[str, str], images: list[bytes], spool: Path,
                 max_in_flight: int | None = None):
        """``max_in_flight`` None: the sender's own default, one latency budget of frames at
        the offered rate (``pi_edge.config.in_flight_limit``)."""
        self.url, self.keys, self.images, self.spool = url, keys, images, spool
        self.max_in_flight = max_in_flight
        self.prefix = f"EDGE-{os.getpid()}-{int(time.time())}"
        self.n = 0

    def _sender(self, side: str, run: LineRun, answered: dict[str, list[float]], fps: float) -> Sender:
        cfg = EdgeConfig(gateway_url=self.url, device_id=f"bench-{side}", api_key=self.keys[side], side=side,
                         drives_gpio=side == "left", max_in_flight=self.max_in_flight, line_id="bench", fps=fps,
                         spool_dir=str(self.spool / f"{self.prefix}-{self.n}-{side}"))

        def on_result(frame: Frame, result: dict) -> None:
            ms = (time.time() - frame.captured_at) * 1000
            t = result["timings_ms"]
            run.frames_ms.append(ms)
            run.parts.append((ms, t["inference"], t["pairing_wait"], t["total"]))
            sides = answered.setdefault(frame.board_id, [])
            sides.append(ms)
            if len(sides) == 2:
                run.boards_ms.append(max(sides))

        return Sender(cfg, Spool(cfg.spool_dir), on_result=on_result)

    async def run(self, boards_per_s: float, seconds: float) -> LineRun:
        run, answered = LineRun(), {}
        senders = [self._sender(side, run, answered, boards_per_s) for side in ("left", "right")]
        run.in_flight_limit = senders[0].in_flight_limit
        tasks = [asyncio.create_task(s.run()) for s in senders]
        async with httpx.AsyncClient(timeout=30) as http:
            writes, slow = await outbox_writes(http, self.url)
        try:
            period = 1.0 / boards_per_s
            next_at = time.perf_counter()
            end = next_at + seconds
            while next_at < end:
                self.n += 1
                board, captured = f"{self.prefix}-{self.n:06d}", time.time()
                for k, s in enumerate(senders):
                    s.submit(Frame(self.images[(self.n + 7 * k) % len(self.images)], board, captured))
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await asyncio.gather(*(s.drain() for s in senders))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in senders:
                await s.close()
        async with httpx.AsyncClient(timeout=30) as http:
            writes_after, slow_after = await outbox_writes(http, self.url)
        run.outbox_writes, run.outbox_slow = writes_after - writes, slow_after - slow
        run.skipped = sum(s.stats.skipped for s in senders)
        run.errors += [f"{s.cfg.side}: {s.stats.retries} retries, {s.stats.spooled} spooled, {s.stats.refused} refused"
                       for s in senders if s.stats.retries or s.stats.spooled or s.stats.refused]
        return run

"""Cold first board (issue 16, lever 4): boards one at a time through the gateway right
after something started - the first one against the median of boards 5-15.

Each board's two sides are posted together (as the two cameras do); the next board goes
when both are answered and ``gap_s`` has passed, so no board queues behind another and any
difference is the first request paying for something the later ones find ready."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from serving.admin import ModelAdmin
from serving.repository import DETECTOR

N_BOARDS = 15


@dataclass
class BoardsInTurn:
    """Per board: the client's milliseconds (slower side) and the gateway's account of
    that side (upload, inference, pairing wait, total); the detector versions that answered."""

    boards_ms: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)

    @property
    def first_ms(self) -> float:
        return self.boards_ms[0]

    @property
    def steady_ms(self) -> float:
        """Median of boards 5-15 (counted from 1)."""
        return float(np.median(self.boards_ms[4:15]))

    @property
    def ratio(self) -> float:
        return self.first_ms / self.steady_ms


async def _side(http: httpx.AsyncClient, url: str, key: str, side: str, board: str, img: bytes) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = await http.post(f"{url}/v1/inspect", data={"board_id": board},
                        files={"image": (f"{side}.jpg", img, "image/jpeg")},
                        headers={"X-Device-Id": f"bench-{side}", "X-API-Key": key,
                                 "Idempotency-Key": f"{board}:{side}"})
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return ms, r.json()


async def boards_in_turn(url: str, keys: dict[str, str], images: list[bytes], label: str,
                         n: int = N_BOARDS, gap_s: float = 0.1) -> BoardsInTurn:
    """``n`` boards one after another on a new connection per camera (as after a restart)."""
    out = BoardsInTurn()
    prefix = f"COLD-{label}-{int(time.time())}"
    async with httpx.AsyncClient(timeout=30) as left, httpx.AsyncClient(timeout=30) as right:
        for i in range(n):
            board = f"{prefix}-{i:03d}"
            sides = await asyncio.gather(
                _side(left, url, keys["left"], "left", board, images[i % len(images)]),
                _side(right, url, keys["right"], "right", board, images[(i + 7) % len(images)]))
            ms, answer = max(sides, key=lambda s: s[0])
            out.boards_ms.append(ms)
            out.parts.append({"client": ms, **answer["timings_ms"]})
            out.versions.update(a["model"]["version"] for _, a in sides)
            await asyncio.sleep(gap_s)
    return out


def hot_swap(repository: Path, triton_http_url: str, weights: Path) -> int:
    """A new pcb_detector version exported (the same weights: the swap, not the model, is
    under test), loaded next to the served one and promoted, as ``serving.admin`` does it."""
    from export import onnx_target

    admin = ModelAdmin(triton_http_url, repository)
    new, _ = onnx_target.add_version(repository, weights, imgsz=320, max_batch=16)
    # the export is the ML engineer's step, done before (and elsewhere, in a plant): let the
    # exporter's threads (torch's OpenMP pool spins after its work) go quiet first, so the
    # boards measure the swap, not the export beside it
    time.sleep(2)
    admin.load(DETECTOR, new)
    admin.promote(DETECTOR, new)
    return new


def report_lines(cold: dict[str, list[BoardsInTurn]]) -> list[str]:
    """Board 1 against boards 5-15, per event over its repeated runs, and where board 1's
    extra time went: Triton (the gateway's inference timing) or the gateway's own front
    (client time minus the gateway's total: HTTP, multipart, routing, dependencies before its
    timer starts)."""
    lines = ["| first board after | runs | board 1 ms | boards 5-15 ms | first / steady, each run | median "
             "| inference ms, board 1 / steady | gateway front ms, board 1 / steady |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for name, runs in cold.items():
        if not runs:
            continue
        front = [[p["client"] - p["total"] for p in r.parts] for r in runs]
        infer = [[p["inference"] for p in r.parts] for r in runs]

        def med(rows: list[list[float]], first: bool) -> float:
            return float(np.median([x[0] if first else np.median(x[4:15]) for x in rows]))
        lines.append(f"| {name} | {len(runs)} | {np.median([r.first_ms for r in runs]):.0f} | "
                     f"{np.median([r.steady_ms for r in runs]):.0f} | "
                     f"{', '.join(f'{r.ratio:.2f}x' for r in runs)} | **{np.median([r.ratio for r in runs]):.2f}x** | "
                     f"{med(infer, True):.0f} / {med(infer, False):.0f} | {med(front, True):.0f} / {med(front, False):.0f} |")
    return lines

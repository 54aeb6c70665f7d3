"""One inspection, end to end: idempotency, Triton, pairing of the two sides, the board
verdict and the GPIO decision, and the durable record (outbox) written before answering.

Paired mode (the seed's line): Pi 1 (left, drives the sorter) and Pi 2 (right) post the
same board id separately. Each side is inspected on arrival and put in the pair store.
The GPIO-driving device waits for the other side up to ``pairing_window_ms``; then it gets
the fused board verdict (``paired``) or, if the other side never came, the verdict of its
own side (``partial``). The GPIO command is claimed once per board across all workers, so
a board never gets two pulses. A side that arrives after its board was decided partially
is recorded as ``late``. Non-driving devices never wait and never get a GPIO command.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.core.errors import ServiceUnavailable
from gateway.core.metrics import INSPECTION_LATENCY, PAIRING, VERDICTS
from gateway.services.devices import DeviceInfo
from gateway.services.image_store import ImageStore
from gateway.services.live import LiveFeed
from gateway.services.outbox import Outbox
from gateway.services.pair_store import OTHER, PairStore
from gateway.services.system_log import SystemLogger
from gateway.services.triton import DualResult, SideResult, TritonService
from pcb import taxonomy
from pcb.verdict import SideVerdict, fuse


@dataclass(frozen=True)
class Submission:
    device: DeviceInfo
    board_id: str
    idempotency_key: str | None = None
    captured_at: float | None = None  # unix seconds, from the edge
    paired: bool = True  # False: a lone frame (seed /predict), no waiting for another side
    upload_ms: float = 0.0  # reading + checking the upload, before this service starts


def _now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _verdict_json(code: int) -> dict:
    v = taxonomy.load().verdict(code)
    return {"code": v.name, "label": v.label}


def _detections(s: SideResult) -> list[dict]:
    return [{"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)],
             "class": d.class_name, "confidence": round(d.confidence, 4)} for d in s.detections]


def _row(iid: str, sub: Submission, gpio: dict | None, image_path: str | None, model_version: int,
         total_ms: float, **fields) -> dict:
    """The database record: what every inspection row carries, plus ``fields``."""
    return {
        "id": iid, "board_id": sub.board_id, "device_id": sub.device.id, **fields,
        "gpio_pin": gpio["pin"] if gpio else None, "gpio_duration_ms": gpio["duration_ms"] if gpio else None,
        "image_path": image_path, "model_version": model_version, "latency_ms": round(total_ms, 2),
        "captured_at": datetime.fromtimestamp(sub.captured_at, UTC).replace(tzinfo=None).isoformat()
        if sub.captured_at else None,
        "created_at": _now_iso(),
    }


def _event(row: dict, answer: dict) -> dict:
    """What the dashboard shows of one answered inspection."""
    boxes = row["boxes"]
    n = sum(len(v) for v in boxes.values()) if isinstance(boxes, dict) else len(boxes or [])
    return {"id": row["id"], "board_id": row["board_id"], "device_id": row["device_id"],
            "side": row["camera_side"], "verdict": row["verdict"], "board_verdict": row["board_verdict"],
            "label": taxonomy.load().verdict(row["verdict"]).label, "confidence": round(row["confidence"], 3),
            "pairing": row["pairing"], "gpio_pin": row["gpio_pin"], "detections": n,
            "has_image": bool(row["image_path"]), "latency_ms": row["latency_ms"], "created_at": row["created_at"]}


class InspectionService:
    def __init__(self, triton: TritonService, pairs: PairStore, outbox: Outbox, pairing_window_ms: int,
                 images: ImageStore | None = None, live: LiveFeed | None = None,
                 events: SystemLogger | None = None):
        self.triton, self.pairs, self.outbox = triton, pairs, outbox
        self.window_s = pairing_window_ms / 1000
        self.images = images
        self.live = live
        self.events = events
        self._background: set[asyncio.Task] = set()

    async def _save_images(self, iid: str, sides: dict[str, tuple[int, bytes]]) -> str | None:
        """Keep the sides the policy wants; returns the stored path stem (or None)."""
        if self.images is None:
            return None
        wanted = {s: data for s, (code, data) in sides.items() if self.images.wants(code)}
        if not wanted:
            return None
        stem = self.images.stem(iid)
        for side, data in wanted.items():
            await asyncio.to_thread(self.images.save, stem, side, data)
        return stem

    async def replay(self, sub: Submission) -> dict | None:
        if not sub.idempotency_key:
            return None
        return await asyncio.to_thread(self.outbox.seen, sub.device.id, sub.idempotency_key)

    async def _record(self, sub: Submission, row: dict, response: dict, route: str) -> dict:
        """Durably store the row before answering; a racing duplicate gets the first answer."""
        idem = (sub.device.id, sub.idempotency_key, response) if sub.idempotency_key else None
        try:
            first = await asyncio.to_thread(self.outbox.put, row["id"], "inspection", row, idem)
        except OSError as e:  # the local disk itself failed: refuse rather than lose
            raise ServiceUnavailable(f"cannot store the inspection: {e}", "storage_unavailable", 5) from e
        answer = first or response
        pairing_now = row.get("pairing")
        if first is None and self.events is not None and pairing_now in ("partial", "late"):
            msg = (f"board {row['board_id']}: the other side did not arrive within the pairing window"
                   if pairing_now == "partial" else f"board {row['board_id']}: {row['camera_side']} side arrived late")
            await asyncio.to_thread(self.events, "warning", "pairing", msg,
                                    {"board_id": row["board_id"], "inspection_id": row["id"]})
        if first is None:
            verdict = answer["verdict"]["code"]
            VERDICTS.labels(route, verdict).inc()
            INSPECTION_LATENCY.labels(route, verdict).observe(answer["timings_ms"]["total"] / 1000)
            pairing = answer.get("board", {}).get("pairing") if isinstance(answer.get("board"), dict) else "dual"
            PAIRING.labels(pairing or "dual").inc()
            if self.live is not None:  # never let the dashboard delay the line
                task = asyncio.create_task(self.live.publish(_event(row, answer)))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return answer

    async def inspect_side(self, sub: Submission, side: str, image: bytes) -> dict:
        prior = await self.replay(sub)
        if prior:
            return prior
        t0 = time.perf_counter()
        result, infer_ms = await self.triton.inspect(image)
        iid = str(uuid.uuid4())
        mine = SideVerdict(result.verdict_code, result.confidence)
        if sub.paired:  # a lone frame has no other side to meet: keep the pair store small
            await self.pairs.put(sub.board_id, side, {"code": mine.code, "confidence": mine.confidence,
                                                      "inspection_id": iid})
        other_side = OTHER[side]
        gpio = None
        wait_ms = 0.0
        if not sub.paired:
            other, pairing = None, "single"
        elif sub.device.drives_gpio:
            t_wait = time.perf_counter()
            other = await self.pairs.wait_for(sub.board_id, other_side, self.window_s)
            wait_ms = (time.perf_counter() - t_wait) * 1000
            pairing = "paired" if other else "partial"
        else:
            other = await self.pairs.get(sub.board_id, other_side)
            decision = await self.pairs.get(sub.board_id, "decision")
            pairing = "late" if decision and decision.get("partial") else ("paired" if other else "pending")
        other_v = SideVerdict(other["code"], other["confidence"]) if other else None
        sides = {side: mine, other_side: other_v}
        board = fuse(sides["left"], sides["right"])
        if sub.device.drives_gpio:
            if sub.paired:
                await self.pairs.put(sub.board_id, "decision", {"code": board.code, "partial": other is None})
            if await self.pairs.claim_once(f"gpio:{sub.board_id}"):
                gpio = {"pin": board.gpio_pin, "duration_ms": board.gpio_duration_ms}
        image_path = await self._save_images(iid, {side: (mine.code, image)})
        total_ms = (time.perf_counter() - t0) * 1000
        response = {
            "inspection_id": iid, "board_id": sub.board_id, "device_id": sub.device.id, "side": side,
            "verdict": _verdict_json(mine.code), "confidence": round(mine.confidence, 4),
            "detections": _detections(result),
            "board": {"verdict": _verdict_json(board.code), "confidence": round(board.confidence, 4),
                      "pairing": pairing, "partial": pairing == "partial"},
            "gpio": gpio,
            "model": {"name": "pcb_detector", "version": result.detector_version},
            # decoding happens inside the Triton ensemble, so it is part of "inference"
            "timings_ms": {"upload": round(sub.upload_ms, 2), "inference": round(infer_ms, 2),
                           "pairing_wait": round(wait_ms, 2), "total": round(sub.upload_ms + total_ms, 2)},
        }
        board_known = pairing != "pending" or gpio is not None
        row = _row(iid, sub, gpio, image_path, result.detector_version, total_ms,
                   camera_side=side, verdict=taxonomy.load().verdict(mine.code).name, verdict_code=mine.code,
                   confidence=mine.confidence,
                   board_verdict=taxonomy.load().verdict(board.code).name if board_known else None,
                   board_verdict_code=board.code if board_known else None,
                   pairing=pairing, boxes=response["detections"])
        return await self._record(sub, row, response, "inspect")

    async def inspect_dual(self, sub: Submission, left: bytes, right: bytes) -> dict:
        prior = await self.replay(sub)
        if prior:
            return prior
        t0 = time.perf_counter()
        r: DualResult = await self.triton.inspect_dual(left, right)
        gpio = None
        if sub.device.drives_gpio and await self.pairs.claim_once(f"gpio:{sub.board_id}"):
            gpio = {"pin": r.gpio_pin, "duration_ms": r.gpio_duration_ms}
        iid = str(uuid.uuid4())
        image_path = await self._save_images(iid, {"left": (r.left.verdict_code, left),
                                                   "right": (r.right.verdict_code, right)})
        total_ms = (time.perf_counter() - t0) * 1000
        response = {
            "inspection_id": iid, "board_id": sub.board_id, "device_id": sub.device.id,
            "verdict": _verdict_json(r.board_verdict_code), "confidence": round(r.board_confidence, 4),
            "left": {"verdict": _verdict_json(r.left.verdict_code), "confidence": round(r.left.confidence, 4),
                     "detections": _detections(r.left)},
            "right": {"verdict": _verdict_json(r.right.verdict_code), "confidence": round(r.right.confidence, 4),
                      "detections": _detections(r.right)},
            "gpio": gpio,
            "model": {"name": "pcb_detector", "version": r.detector_version},
            "timings_ms": {"upload": round(sub.upload_ms, 2), "inference": round(r.inference_ms, 2),
                           "total": round(sub.upload_ms + total_ms, 2)},
        }
        name = taxonomy.load().verdict(r.board_verdict_code).name
        row = _row(iid, sub, gpio, image_path, r.detector_version, total_ms,
                   camera_side="both", verdict=name, verdict_code=r.board_verdict_code,
                   confidence=r.board_confidence, board_verdict=name, board_verdict_code=r.board_verdict_code,
                   pairing="dual",
                   boxes={"left": response["left"]["detections"], "right": response["right"]["detections"]})
        return await self._record(sub, row, response, "inspect_dual")

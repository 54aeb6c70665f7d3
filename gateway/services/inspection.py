"""One inspection, end to end: idempotency, Triton, pairing of the two sides, the board
verdict and the GPIO decision, and the durable record (outbox) written before answering.

Paired mode (the seed's line): Pi 1 (left, drives the sorter) and Pi 2 (right) post the
same board id separately. Each side is inspected on arrival and put in the pair store.
The GPIO-driving device waits for the other side up to ``pairing_window_ms``, then the
board is decided once (``pcb.pairing``): ``paired`` or, if the other side is not there,
``partial``. The decision carries the pulse and the request that owns it, so a retry of
that request (same Idempotency-Key, any replica) gets the same pulse, and nobody else
gets one. A side that arrives after a partial decision is recorded as ``late``.
Non-driving devices never wait and never get a GPIO command.

Replays (frames the edge spooled while the gateway was unreachable) are records: no
pairing, no decision, no pulse (``pairing = "replay"``, ``gpio`` null).

Nothing is answered without its record: if the image or the outbox cannot be written the
answer is ``503 storage_unavailable`` (the edge retries or spools), and the retry finds the
board's decision where the first attempt left it.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.core.errors import ServiceUnavailable
from gateway.core.metrics import INSPECTION_LATENCY, OUTBOX_WRITE, PAIRING, VERDICTS
from gateway.services.devices import DeviceInfo
from gateway.services.idempotency import Idempotency, IdempotencyConflict, fingerprint
from gateway.services.image_store import ImageStore
from gateway.services.live import LiveFeed
from gateway.services.outbox import Outbox, StorageError
from gateway.services.pair_store import PairStore
from gateway.services.shadow import ShadowMirror
from gateway.services.system_log import SystemLogger
from gateway.services.triton import DualResult, SideResult, TritonService
from pcb import pairing as pairing_rules
from pcb import taxonomy
from pcb.pairing import DUAL, OTHER, PARTIAL, PENDING, REPLAY, SINGLE
from pcb.verdict import SideVerdict, fuse
from store.records import InspectionRecord


@dataclass(frozen=True)
class Submission:
    device: DeviceInfo
    board_id: str
    idempotency_key: str | None = None
    captured_at: float | None = None  # unix seconds, from the edge
    paired: bool = True  # False: a lone frame (seed /predict), no waiting for another side
    upload_ms: float = 0.0  # reading + checking the upload, before this service starts
    replay: bool = False  # a spooled frame sent again later: a record, never a pulse

    @property
    def owner(self) -> str | None:
        """Who may fire this board's pulse: the request, across its retries."""
        return f"{self.device.id}:{self.idempotency_key}" if self.idempotency_key else None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _verdict_json(code: int) -> dict:
    v = taxonomy.load().verdict(code)
    return {"code": v.name, "label": v.label}


def _anomaly(s: SideResult) -> float | None:
    return None if s.anomaly_score is None else round(s.anomaly_score, 4)


def _detections(s: SideResult) -> list[dict]:
    return [{"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)],
             "class": d.class_name, "confidence": round(d.confidence, 4)} for d in s.detections]


def _row(iid: str, sub: Submission, gpio: dict | None, image_path: str | None, model_version: int,
         total_ms: float, **fields) -> InspectionRecord:
    """The database record: what every inspection row carries, plus ``fields``."""
    return InspectionRecord(
        id=iid, board_id=sub.board_id, device_id=sub.device.id, **fields,
        gpio_pin=gpio["pin"] if gpio else None, gpio_duration_ms=gpio["duration_ms"] if gpio else None,
        image_path=image_path, model_version=model_version, latency_ms=round(total_ms, 2), request_key=sub.owner,
        captured_at=datetime.fromtimestamp(sub.captured_at, UTC).replace(tzinfo=None)
        if sub.captured_at is not None and math.isfinite(sub.captured_at) else None,
        created_at=_now(),
    )


def _event(row: InspectionRecord) -> dict:
    """What the dashboard shows of one answered inspection."""
    boxes = row.boxes
    n = sum(len(v) for v in boxes.values()) if isinstance(boxes, dict) else len(boxes or [])
    return {"id": row.id, "board_id": row.board_id, "device_id": row.device_id,
            "side": row.camera_side, "verdict": row.verdict, "board_verdict": row.board_verdict,
            "label": taxonomy.load().verdict(row.verdict).label, "confidence": round(row.confidence, 3),
            "pairing": row.pairing, "gpio_pin": row.gpio_pin, "detections": n,
            "has_image": bool(row.image_path), "latency_ms": row.latency_ms, "anomaly_score": row.anomaly_score,
            "created_at": row.created_at.isoformat()}


class InspectionService:
    def __init__(self, triton: TritonService, pairs: PairStore, outbox: Outbox, pairing_window_ms: int,
                 images: ImageStore | None = None, live: LiveFeed | None = None,
                 events: SystemLogger | None = None, idempotency: Idempotency | None = None):
        self.triton, self.pairs, self.outbox = triton, pairs, outbox
        self.window_s = pairing_window_ms / 1000
        self.images = images
        self.live = live
        self.events = events
        self.idempotency = idempotency or Idempotency(outbox)
        self.shadow: ShadowMirror | None = None  # set by the app: mirrors answered sides to a shadow version
        self._background: set[asyncio.Task] = set()

    async def _save_images(self, iid: str, sides: dict[str, tuple[int, bytes, SideResult]]) -> str | None:
        """Keep the sides the policy wants (and their anomaly maps, for the overlay); returns
        the stored path stem (or None)."""
        if self.images is None:
            return None
        wanted = {s: (data, r) for s, (code, data, r) in sides.items() if self.images.wants(code)}
        if not wanted:
            return None
        stem = self.images.stem(iid)
        try:
            for side, (data, r) in wanted.items():
                await asyncio.to_thread(self.images.save, stem, side, data, r.anomaly_map)
        except (OSError, ValueError) as e:  # disk full, a read-only or broken volume
            raise ServiceUnavailable(f"cannot store the inspection image: {e}", "storage_unavailable", 5) from e
        return stem

    async def _idempotent(self, sub: Submission, fp: str, work) -> dict:
        """Run ``work()`` once per (device, Idempotency-Key): a retry gets the first answer."""
        scope, key = sub.device.id, sub.idempotency_key
        prior = await self.idempotency.begin(scope, key, fp)
        if prior is not None:
            return prior
        try:
            answer = await work(fp)
        except BaseException:
            await self.idempotency.release(scope, key)
            raise
        await self.idempotency.finish(scope, key, fp, answer)
        return answer

    async def _record(self, sub: Submission, row: InspectionRecord, response: dict, route: str, fp: str) -> dict:
        """Durably store the row before answering; a racing duplicate gets the first answer."""
        idem = (sub.device.id, sub.idempotency_key, fp, response) if sub.idempotency_key else None
        t0 = time.perf_counter()
        try:
            first = await asyncio.to_thread(self.outbox.put, row.id, "inspection", row.to_outbox(), idem)
        except (StorageError, OSError, sqlite3.Error) as e:  # refuse rather than answer unrecorded
            raise ServiceUnavailable(f"cannot store the inspection: {e}", "storage_unavailable", 5) from e
        finally:
            OUTBOX_WRITE.observe(time.perf_counter() - t0)
        if first is not None:  # another worker on this outbox file answered the same key first
            if first.fingerprint is not None and first.fingerprint != fp:
                raise IdempotencyConflict(f"Idempotency-Key {sub.idempotency_key!r} was used for another request")
            return first.response
        pairing_now = row.pairing
        if self.events is not None and pairing_now in (PARTIAL, "late"):
            msg = (f"board {row.board_id}: the other side did not arrive within the pairing window"
                   if pairing_now == PARTIAL else f"board {row.board_id}: {row.camera_side} side arrived late")
            await asyncio.to_thread(self.events, "warning", "pairing", msg,
                                    {"board_id": row.board_id, "inspection_id": row.id})
        verdict = response["verdict"]["code"]
        VERDICTS.labels(route, verdict).inc()
        INSPECTION_LATENCY.labels(route, verdict).observe(response["timings_ms"]["total"] / 1000)
        PAIRING.labels(pairing_now or DUAL).inc()
        if self.live is not None:  # never let the dashboard delay the line
            task = asyncio.create_task(self.live.publish(_event(row)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return response

    async def _pair(self, sub: Submission, side: str, iid: str, mine: SideVerdict) -> tuple[str, dict | None, float]:
        """This side's place in its board (``pcb.pairing``): (pairing, decision, wait ms).
        The driving side's whole pairing step fits in the window: time lost to a slow pair
        store comes out of the wait, never on top of it."""
        if sub.replay:
            return REPLAY, None, 0.0
        if not sub.paired:
            return SINGLE, None, 0.0
        t0 = time.monotonic()
        await self.pairs.put(sub.board_id, side, {"code": mine.code, "confidence": mine.confidence,
                                                  "inspection_id": iid})
        if not sub.device.drives_gpio:
            decision = await self.pairs.decision(sub.board_id)
            return pairing_rules.report(decision), decision, 0.0
        other_side = OTHER[side]
        seen = await self.pairs.wait_for(sub.board_id, other_side, max(0.0, self.window_s - (time.monotonic() - t0)))
        wait_ms = (time.monotonic() - t0) * 1000
        owner = sub.owner or iid

        def make(sides: dict[str, dict]) -> dict:
            # a side the wait already saw has arrived, even if the store that decides (memory,
            # after a Redis failure in between) never held it
            return pairing_rules.decide(None, side, mine, sides.get(other_side) or seen, owner)

        decision = await self.pairs.decide(sub.board_id, make)
        return decision["pairing"], decision, wait_ms

    async def inspect_side(self, sub: Submission, side: str, image: bytes) -> dict:
        return await self._idempotent(sub, fingerprint("inspect", sub.board_id, side, image),
                                      lambda fp: self._inspect_side(sub, side, image, fp))

    async def _inspect_side(self, sub: Submission, side: str, image: bytes, fp: str) -> dict:
        t0 = time.perf_counter()
        result, infer_ms = await self.triton.inspect(image)
        iid = str(uuid.uuid4())
        mine = SideVerdict(result.verdict_code, result.confidence)
        pairing, decision, wait_ms = await self._pair(sub, side, iid, mine)
        gpio = None
        if decision is not None:  # paired mode: the board verdict is the decision's
            board = SideVerdict(decision["code"], decision["confidence"])
            if sub.device.drives_gpio and decision["owner"] == (sub.owner or iid):
                gpio = {"pin": decision["pin"], "duration_ms": decision["duration_ms"]}
        else:
            board = SideVerdict(mine.code, mine.confidence)
            if sub.device.drives_gpio and pairing == SINGLE:  # a lone frame decides its board
                fused = fuse(mine, None) if side == "left" else fuse(None, mine)
                gpio = {"pin": fused.gpio_pin, "duration_ms": fused.gpio_duration_ms}
        image_path = await self._save_images(iid, {side: (mine.code, image, result)})
        total_ms = (time.perf_counter() - t0) * 1000
        board_known = pairing not in (PENDING, REPLAY)
        response = {
            "inspection_id": iid, "board_id": sub.board_id, "device_id": sub.device.id, "side": side,
            "verdict": _verdict_json(mine.code), "confidence": round(mine.confidence, 4),
            "detections": _detections(result),
            "board": {"verdict": _verdict_json(board.code), "confidence": round(board.confidence, 4),
                      "pairing": pairing, "partial": pairing == PARTIAL},
            "gpio": gpio,
            "model": {"name": "pcb_detector", "version": result.detector_version},
            # decoding happens inside the Triton ensemble, so it is part of "inference"
            "timings_ms": {"upload": round(sub.upload_ms, 2), "inference": round(infer_ms, 2),
                           "pairing_wait": round(wait_ms, 2), "total": round(sub.upload_ms + total_ms, 2)},
            "anomaly_score": _anomaly(result),
        }
        row = _row(iid, sub, gpio, image_path, result.detector_version, total_ms,
                   camera_side=side, verdict=taxonomy.load().verdict(mine.code).name, verdict_code=mine.code,
                   confidence=mine.confidence,
                   board_verdict=taxonomy.load().verdict(board.code).name if board_known else None,
                   board_verdict_code=board.code if board_known else None,
                   pairing=pairing, boxes=response["detections"], anomaly_score=response["anomaly_score"])
        answer = await self._record(sub, row, response, "inspect", fp)
        if self.shadow is not None:  # after the answer is safe: a put_nowait, never a wait
            self.shadow.offer(iid, image, result, infer_ms)
        return answer

    async def inspect_dual(self, sub: Submission, left: bytes, right: bytes) -> dict:
        return await self._idempotent(sub, fingerprint("inspect_dual", sub.board_id, left, right),
                                      lambda fp: self._inspect_dual(sub, left, right, fp))

    async def _inspect_dual(self, sub: Submission, left: bytes, right: bytes, fp: str) -> dict:
        t0 = time.perf_counter()
        r: DualResult = await self.triton.inspect_dual(left, right)
        iid = str(uuid.uuid4())
        gpio = None
        if sub.device.drives_gpio and not sub.replay:
            owner = sub.owner or iid
            decision = {"pairing": DUAL, "code": r.board_verdict_code, "confidence": r.board_confidence,
                        "pin": r.gpio_pin, "duration_ms": r.gpio_duration_ms, "owner": owner}
            if sub.paired:  # one decision per board, as for separate sides
                decision = await self.pairs.decide(sub.board_id, lambda _sides: decision)
            if decision["owner"] == owner:
                gpio = {"pin": decision["pin"], "duration_ms": decision["duration_ms"]}
        image_path = await self._save_images(iid, {"left": (r.left.verdict_code, left, r.left),
                                                   "right": (r.right.verdict_code, right, r.right)})
        total_ms = (time.perf_counter() - t0) * 1000
        response: dict[str, Any] = {
            "inspection_id": iid, "board_id": sub.board_id, "device_id": sub.device.id,
            "verdict": _verdict_json(r.board_verdict_code), "confidence": round(r.board_confidence, 4),
            "left": {"verdict": _verdict_json(r.left.verdict_code), "confidence": round(r.left.confidence, 4),
                     "detections": _detections(r.left), "anomaly_score": _anomaly(r.left)},
            "right": {"verdict": _verdict_json(r.right.verdict_code), "confidence": round(r.right.confidence, 4),
                      "detections": _detections(r.right), "anomaly_score": _anomaly(r.right)},
            "gpio": gpio,
            "model": {"name": "pcb_detector", "version": r.detector_version},
            "timings_ms": {"upload": round(sub.upload_ms, 2), "inference": round(r.inference_ms, 2),
                           "total": round(sub.upload_ms + total_ms, 2)},
        }
        name = taxonomy.load().verdict(r.board_verdict_code).name
        row = _row(iid, sub, gpio, image_path, r.detector_version, total_ms,
                   camera_side="both", verdict=name, verdict_code=r.board_verdict_code,
                   confidence=r.board_confidence, board_verdict=name, board_verdict_code=r.board_verdict_code,
                   pairing=REPLAY if sub.replay else DUAL,
                   boxes={"left": response["left"]["detections"], "right": response["right"]["detections"]},
                   anomaly_score=max((s for s in (_anomaly(r.left), _anomaly(r.right)) if s is not None), default=None))
        answer = await self._record(sub, row, response, "inspect_dual", fp)
        if self.shadow is not None:
            for side_result, data in ((r.left, left), (r.right, right)):
                self.shadow.offer(iid, data, side_result, r.inference_ms)
        return answer

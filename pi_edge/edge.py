"""One edge: capture -> JPEG -> sender; the answer's GPIO command (driving device only)
goes to the sorter pins, optionally with a local overlay of the boxes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from pcb import taxonomy
from pi_edge.capture import Source, encode_jpeg, open_source
from pi_edge.config import EdgeConfig
from pi_edge.gpio import SorterGpio
from pi_edge.sender import Frame, Sender
from pi_edge.spool import Spool
from pi_edge.trigger import BoardCounter

log = logging.getLogger("pi_edge")


def sorter_pins() -> list[int]:
    """The offline default: every pin the taxonomy can ask for."""
    return sorted({v.gpio.pin for v in taxonomy.load().verdicts})


def longest_pulse_ms() -> int:
    """The default actuation bound: the taxonomy's longest pulse."""
    return max(v.gpio.duration_ms for v in taxonomy.load().verdicts)


class Edge:
    def __init__(self, cfg: EdgeConfig, source: Source | None = None, session: str | None = None):
        self.cfg = cfg
        self.source = source or open_source(cfg.source, cfg.width, cfg.height, cfg.fps, cfg.side)
        self.counter = BoardCounter(cfg.line_id, session)
        self._session_given = session is not None  # a simulation pins it; a real start asks
        self.gpio = (SorterGpio(sorter_pins(), cfg.gpio_driver, cfg.max_pulse_ms or longest_pulse_ms())
                     if cfg.drives_gpio else None)
        self.spool = Spool(cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_items)
        self.sender = Sender(cfg, self.spool, on_result=self.on_result)
        self.results: list[dict] = []
        self.late_verdicts = 0
        self._frames: dict[str, np.ndarray] = {}

    def on_result(self, frame: Frame, result: dict) -> None:
        self.results.append(result)
        gpio = result.get("gpio")
        age = time.time() - frame.captured_at
        if self.gpio is not None and gpio:
            if age <= self.cfg.decision_window_s:
                try:
                    self.gpio.pulse(int(gpio["pin"]), int(gpio["duration_ms"]))
                except (ValueError, TypeError, KeyError, OverflowError):  # refused, logged by SorterGpio
                    log.error("board %s: GPIO command %r not fired", frame.board_id, gpio)
            else:
                self.late_verdicts += 1
                log.warning("board %s: verdict after %.1f s, past the %.1f s decision window: no pulse",
                            frame.board_id, age, self.cfg.decision_window_s)
        board = result.get("board") or {}
        log.info("board %s: %s (board %s%s)%s", frame.board_id, result["verdict"]["code"],
                 board.get("verdict", {}).get("code", "-"), ", partial" if board.get("partial") else "",
                 f" -> GPIO {gpio['pin']} {gpio['duration_ms']} ms" if gpio else "")
        if self.cfg.overlay != "none":
            self._overlay(frame, result)

    def _overlay(self, frame: Frame, result: dict) -> None:
        img = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        ok = result["verdict"]["code"] == taxonomy.load().ok.name  # the answer's code is the verdict's name
        for d in result.get("detections", []):
            x1, y1, x2, y2 = (int(v) for v in d["box"])
            cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
            cv2.putText(img, d["class"], (x1, max(10, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
        cv2.putText(img, f"{result['verdict']['code']} {result['confidence']:.2f}", (10, 24),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0) if ok else (0, 0, 255), 2)
        if self.cfg.overlay == "save":
            out = Path(self.cfg.overlay_dir)
            out.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / f"{frame.board_id}.jpg"), img)
        else:
            cv2.imshow(f"pi_edge {self.cfg.device_id}", img)
            cv2.waitKey(1)

    async def start_session(self) -> str:
        """This start's board-id session: from the gateway (the two edges of the line agree),
        else a random one (unique, but it pairs with nothing until both edges restart)."""
        if not self._session_given:
            session = await self.sender.line_session()
            if session is None:
                log.warning("no line session from the gateway: using %s (boards will not pair until "
                            "both edges restart together)", self.counter.session)
            else:
                self.counter.start_session(session)
        log.info("line %s, session %s; up to %d requests on the wire (%s)", self.cfg.line_id, self.counter.session,
                 self.sender.in_flight_limit, "max_in_flight" if self.cfg.max_in_flight is not None
                 else f"{self.cfg.latency_budget_ms:g} ms budget at {self.cfg.fps:g} fps")
        return self.counter.session

    async def run(self, max_boards: int | None = None) -> None:
        await self.start_session()
        if self.cfg.trigger_pin is not None:
            return await self._run_triggered(max_boards)
        sender_task = asyncio.create_task(self.sender.run())
        period = 1.0 / self.cfg.fps if self.cfg.fps > 0 else 0.0
        nxt = time.monotonic()
        try:
            frames = self.source.frames()
            boards = 0
            while max_boards is None or boards < max_boards:
                frame = await asyncio.to_thread(next, frames, None)
                if frame is None:
                    break
                board_id = self.counter.next_id()
                self.sender.submit(Frame(encode_jpeg(frame, self.cfg.jpeg_quality), board_id, time.time()))
                boards += 1
                nxt += period
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            await self.sender.drain()
        finally:
            sender_task.cancel()
            await asyncio.gather(sender_task, return_exceptions=True)
            await self.sender.close()

    async def _run_triggered(self, max_boards: int | None) -> None:
        """Photo-eye mode: the camera streams; each rising edge sends the newest frame."""
        import threading

        from pi_edge.trigger import PhotoEye

        loop = asyncio.get_running_loop()
        triggers: asyncio.Queue[float] = asyncio.Queue()
        latest: list[np.ndarray | None] = [None]
        stop = threading.Event()

        def reader() -> None:
            for frame in self.source.frames():
                latest[0] = frame
                if stop.is_set():
                    return

        threading.Thread(target=reader, daemon=True).start()
        assert self.cfg.trigger_pin is not None  # run() takes this path only with a pin
        eye = PhotoEye(self.cfg.trigger_pin, lambda: loop.call_soon_threadsafe(triggers.put_nowait, time.time()))
        sender_task = asyncio.create_task(self.sender.run())
        try:
            boards = 0
            while max_boards is None or boards < max_boards:
                t = await triggers.get()
                frame = latest[0]
                if frame is None:
                    log.warning("photo-eye fired before the camera delivered a frame")
                    continue
                self.sender.submit(Frame(encode_jpeg(frame, self.cfg.jpeg_quality), self.counter.next_id(), t))
                boards += 1
            await self.sender.drain()
        finally:
            stop.set()
            eye.close()
            sender_task.cancel()
            await asyncio.gather(sender_task, return_exceptions=True)
            await self.sender.close()

    def close(self) -> None:
        self.source.close()
        if self.gpio is not None:
            self.gpio.close()
            log.info("all sorter pins low (%s)", ", ".join(str(p) for p in self.gpio.pins))

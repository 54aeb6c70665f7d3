"""Frame sources: a USB webcam through OpenCV (the seed's setup), the Pi camera through
picamera2 when present, a file, a folder or a video (replays), and synthetic boards.

Every source yields BGR frames at (at most) the configured rate; ``latest()`` semantics are
the sender's job (it skips frames while the gateway lags)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


class Source:
    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class OpenCvCamera(Source):
    """A USB webcam (``camera:0``) or any stream OpenCV opens (``camera:rtsp://...``,
    ``camera:/dev/video2``, a video file for tests), through ``cv2.VideoCapture``."""

    def __init__(self, index: int | str, width: int, height: int, fps: float):
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            raise RuntimeError(f"camera {index} could not be opened")
        self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.cap.set(cv2.CAP_PROP_FPS, fps)
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # always the newest frame, not a stale queue

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self.cap.read()
            if not ok:
                return  # unplugged or end of stream: the edge stops and systemd restarts it
            yield frame

    def close(self) -> None:
        self.cap.release()


class PiCamera(Source):
    def __init__(self, width: int, height: int):
        from picamera2 import Picamera2  # only on Raspberry Pi OS

        self.cam = Picamera2()
        self.cam.configure(self.cam.create_video_configuration(main={"size": (width, height), "format": "BGR888"}))
        self.cam.start()

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            yield self.cam.capture_array()

    def close(self) -> None:
        self.cam.stop()


class FileSource(Source):
    """One image, a folder of images (sorted) or a video file, replayed once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(self.path)

    def frames(self) -> Iterator[np.ndarray]:
        if self.path.is_dir():
            for p in sorted(self.path.iterdir()):
                if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
                    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                    if img is not None:
                        yield img
        elif self.path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
            cap = cv2.VideoCapture(str(self.path))
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield frame
            finally:
                cap.release()
        else:
            img = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{self.path} is not an image")
            yield img


class SyntheticBoards(Source):
    """The conveyor in simulation: board n of the line looks the same to every edge that
    asks for board n (the left camera sees seed 2n, the right 2n+1)."""

    def __init__(self, side: str, width: int, height: int, start: int = 0, seed: int = 2024, count: int | None = None):
        self.side, self.size, self.n, self.seed, self.count = side, (width, height), start, seed, count

    def board(self, n: int) -> np.ndarray:
        from pcb.synthetic import render_board

        return render_board(self.seed + 2 * n + (self.side == "right"), size=self.size).image

    def frames(self) -> Iterator[np.ndarray]:
        while self.count is None or self.n < self.count:
            yield self.board(self.n)
            self.n += 1


def open_source(spec: str, width: int = 640, height: int = 480, fps: float = 10.0, side: str = "left") -> Source:
    kind, _, arg = spec.partition(":")
    if kind == "camera":
        return OpenCvCamera(int(arg) if arg.isdigit() or not arg else arg, width, height, fps)
    if kind == "picamera2":
        return PiCamera(width, height)
    if kind in ("file", "folder", "video"):
        return FileSource(arg)
    if kind == "synthetic":
        return SyntheticBoards(side, width, height, count=int(arg) if arg else None)
    raise ValueError(f"unknown source {spec!r} (camera:N, picamera2, file:P, folder:D, video:P, synthetic[:N])")


def paced(frames: Iterator[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """At most ``fps`` frames per second."""
    period = 1.0 / fps if fps > 0 else 0.0
    nxt = time.monotonic()
    for f in frames:
        now = time.monotonic()
        if now < nxt:
            time.sleep(nxt - now)
        nxt = max(nxt + period, time.monotonic())
        yield f


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()

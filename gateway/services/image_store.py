"""Inspection images on disk: which to keep (policy), where, and for how long.

Policy ``all`` keeps every image, ``defects`` only sides whose verdict is not normal (the
seed's default), ``none`` nothing. Files are ``<root>/<YYYY>/<MM>/<DD>/<inspection>_<side>.jpg``,
with the side's anomaly map beside it when the anomaly model is served
(``<inspection>_<side>.anomaly.png``: 8-bit, 128 = the threshold, 255 = twice it);
``prune`` removes the oldest until both the age and the size limits hold.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

POLICIES = ("all", "defects", "none")
MAP_UNIT = 128  # a stored map's pixel value at the anomaly threshold (1.0)


class ImageStore:
    def __init__(self, root: str | Path, policy: str = "defects", max_age_days: float = 30, max_bytes: int = 5 << 30):
        if policy not in POLICIES:
            raise ValueError(f"image policy must be one of {POLICIES}")
        self.root, self.policy = Path(root), policy
        self.max_age_s, self.max_bytes = max_age_days * 86400, max_bytes

    def wants(self, verdict_code: int) -> bool:
        return self.policy == "all" or (self.policy == "defects" and verdict_code > 0)

    @staticmethod
    def stem(inspection_id: str) -> str:
        """The image path stored with an inspection; the files are ``<stem>_<side>.jpg``."""
        return f"{datetime.now(UTC):%Y/%m/%d}/{inspection_id}"

    def save(self, stem: str, side: str, data: bytes, anomaly_map: np.ndarray | None = None) -> None:
        """Write the encoded image as received, and its anomaly map when there is one
        (each atomically: temp file, then rename; the map first, so an image never shows
        without the map it had)."""
        path = self.path(stem, side)
        path.parent.mkdir(parents=True, exist_ok=True)
        if anomaly_map is not None and anomaly_map.size:
            level = np.nan_to_num(anomaly_map * MAP_UNIT, nan=255.0, posinf=255.0, neginf=0.0)
            ok, png = cv2.imencode(".png", np.clip(level, 0, 255).astype(np.uint8))
            if ok:
                self._write(self.map_path(stem, side), png.tobytes())
        self._write(path, data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def path(self, stem: str, side: str) -> Path:
        p = (self.root / f"{stem}_{side}.jpg").resolve()
        if self.root.resolve() not in p.parents:
            raise ValueError("path outside the image store")
        return p

    def map_path(self, stem: str, side: str) -> Path:
        return self.path(stem, side).with_suffix(".anomaly.png")

    def annotated(self, stem: str, side: str, detections: list[dict], overlay: str | None = None) -> bytes:
        """The image with its detections drawn; ``overlay="anomaly"``: the anomaly map on
        top as a heat map (blended where it is above half the threshold, outlined where it
        reaches it). Raises FileNotFoundError for an overlay the side has no map for."""
        img = cv2.imdecode(np.fromfile(self.path(stem, side), np.uint8), cv2.IMREAD_COLOR)
        if overlay == "anomaly":
            img = self._heat(img, cv2.imdecode(np.fromfile(self.map_path(stem, side), np.uint8),
                                               cv2.IMREAD_GRAYSCALE))
        for d in detections:
            x1, y1, x2, y2 = (int(v) for v in d["box"])
            cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
            cv2.putText(img, f"{d['class']} {d['confidence']:.2f}", (x1, max(12, y1 - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
        return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()

    @staticmethod
    def _heat(img: np.ndarray, level: np.ndarray | None) -> np.ndarray:
        if level is None:
            raise FileNotFoundError("the anomaly map is unreadable")
        h, w = img.shape[:2]
        big = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
        heat = cv2.applyColorMap(big, cv2.COLORMAP_JET)
        alpha = (np.clip((big.astype(np.float32) - MAP_UNIT / 2) / MAP_UNIT, 0, 1) * 0.6)[..., None]
        out = (img * (1 - alpha) + heat * alpha).astype(np.uint8)
        contours, _ = cv2.findContours((big >= MAP_UNIT).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
        return out

    def prune(self) -> int:
        """Several gateways may share the volume and prune at once: a file that vanished
        between listing and stat (or unlink) is simply gone, not an error."""
        files = []
        for p in self.root.rglob("*.jpg"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort(key=lambda t: t[0])
        total = sum(s for _, s, _ in files)
        now, removed = time.time(), 0
        for mtime, size, p in files:
            if now - mtime <= self.max_age_s and total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            p.with_suffix(".anomaly.png").unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

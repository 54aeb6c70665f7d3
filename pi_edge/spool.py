"""On-disk spool for frames the gateway could not take (unreachable, 5xx, timeout).

Each spooled frame is two files: ``<seq>.jpg`` (the JPEG as it would have been sent) and
``<seq>.json`` (board id, side, capture time, idempotency key), written to a temp name and
renamed, so a power cut never leaves half an entry. ``seq`` is a zero-padded counter, so
the directory listing is the replay order (oldest first).

Bounded: when a new frame would exceed ``max_bytes`` or ``max_items``, the *oldest*
entries are dropped first (and counted in ``dropped``): after a long outage the line wants
the most recent boards' records, and the oldest are the ones already past any use for
sorting.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    image: Path
    meta: dict


class Spool:
    def __init__(self, root: str | Path, max_bytes: int = 200 << 20, max_items: int = 20_000):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_items = max_bytes, max_items
        self.dropped = 0
        self._lock = threading.Lock()
        for tmp in self.root.glob("*.tmp"):  # an interrupted write
            tmp.unlink(missing_ok=True)
        existing = self._seqs()
        self._next = (existing[-1] + 1) if existing else 0

    def _seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.root.glob("*.json") if p.stem.isdigit())

    def _size(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.suffix in (".jpg", ".json"))

    def __len__(self) -> int:
        return len(self._seqs())

    def put(self, image: bytes, meta: dict) -> int:
        with self._lock:
            seqs = self._seqs()
            size = self._size()
            need = len(image) + 512
            while seqs and (len(seqs) + 1 > self.max_items or size + need > self.max_bytes):
                oldest = seqs.pop(0)
                size -= self._remove(oldest)
                self.dropped += 1
            seq = self._next
            self._next += 1
            for suffix, data in ((".jpg", image), (".json", json.dumps(meta).encode())):
                tmp = self.root / f"{seq:012d}{suffix}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.root / f"{seq:012d}{suffix}")
            return seq

    def _remove(self, seq: int) -> int:
        freed = 0
        # the .json goes first: an entry without its meta is never replayed
        for suffix in (".json", ".jpg"):
            p = self.root / f"{seq:012d}{suffix}"
            if p.exists():
                freed += p.stat().st_size
                p.unlink()
        return freed

    def oldest(self, n: int = 1) -> list[SpoolEntry]:
        out = []
        for seq in self._seqs()[:n]:
            meta_path = self.root / f"{seq:012d}.json"
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                self._remove(seq)
                continue
            out.append(SpoolEntry(seq, self.root / f"{seq:012d}.jpg", meta))
        return out

    def done(self, seq: int) -> None:
        with self._lock:
            self._remove(seq)

    def set_aside(self, seq: int) -> None:
        """Move an entry the gateway keeps refusing to ``dead/`` (kept for an operator,
        never replayed again, not counted against the spool's bounds)."""
        dead = self.root / "dead"
        dead.mkdir(exist_ok=True)
        with self._lock:
            for suffix in (".json", ".jpg"):
                src = self.root / f"{seq:012d}{suffix}"
                if src.exists():
                    os.replace(src, dead / src.name)

"""Edge devices and their API keys.

Keys are random 32-byte tokens shown once; only their SHA-256 is stored, and a presented
key is compared hash-to-hash with ``hmac.compare_digest`` (constant time). The registry is
held in memory and refreshed from the database, so devices keep authenticating during a
database outage; last-seen times (heartbeats) are kept in memory and flushed in batches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from gateway.core.errors import Unauthorized
from store.models import Device

log = logging.getLogger("gateway.devices")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    side: str
    drives_gpio: bool
    api_key_hash: str
    enabled: bool = True
    name: str = ""


class DeviceRegistry:
    """``cache``: where the last good snapshot is kept (the local outbox file), so a gateway
    that starts while the database is down still knows its devices (``load_cache``)."""

    def __init__(self, sessions: sessionmaker, cache=None):
        self.sessions = sessions
        self.cache = cache
        self._devices: dict[str, DeviceInfo] = {}
        self.last_seen: dict[str, float] = {}  # device id -> unix time
        self._flushed: dict[str, float] = {}
        self._written: dict[str, float] = {}  # device id -> when this worker last changed it
        self._lock = threading.Lock()
        self.loaded_at = 0.0

    def refresh(self) -> None:
        started = time.time()
        with self.sessions() as s:
            rows = s.scalars(select(Device)).all()
        fresh = {d.id: DeviceInfo(d.id, d.side, d.drives_gpio, d.api_key_hash, d.enabled, d.name) for d in rows}
        with self._lock:
            # a change this worker made while the snapshot was being read wins over it
            for dev_id, when in self._written.items():
                if when >= started and dev_id in self._devices:
                    fresh[dev_id] = self._devices[dev_id]
            self._devices = fresh
        self._save_cache()
        for d in rows:
            # heartbeats that reached another worker or pod (flushed there) count here too, so
            # every worker reports the same online status; never flushed back from here
            seen = d.last_seen_at.replace(tzinfo=UTC).timestamp() if d.last_seen_at else 0.0
            if seen > self.last_seen.get(d.id, 0.0):
                self.last_seen[d.id] = self._flushed[d.id] = seen
        self.loaded_at = time.time()

    def _save_cache(self) -> None:
        if self.cache is None:
            return
        try:
            self.cache.save_devices([asdict(d) for d in list(self._devices.values())])
        except Exception as e:  # noqa: BLE001 - the snapshot is a convenience, never fatal
            log.warning("device snapshot not saved: %r", e)

    def load_cache(self) -> int:
        """The last snapshot (database unreachable at start): devices authenticate as they
        did when it was taken; the next successful refresh replaces it."""
        if self.cache is None:
            return 0
        records = self.cache.load_devices()
        with self._lock:
            self._devices = {r["id"]: DeviceInfo(**r) for r in records}
        return len(records)

    def get(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def all(self) -> list[DeviceInfo]:
        return sorted(self._devices.values(), key=lambda d: d.id)

    def authenticate(self, device_id: str | None, api_key: str | None) -> DeviceInfo:
        dev = self._check(device_id, api_key)
        if dev is None and device_id and time.time() - self.loaded_at > 0.25:
            # registered or re-keyed through another worker a moment ago? reload (at most
            # four times a second, so unknown ids cannot hammer the database)
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - database away: judge on what we have
                self.loaded_at = time.time()
            dev = self._check(device_id, api_key)
        if dev is None:
            raise Unauthorized("unknown device or wrong API key", "unknown_device")
        self.last_seen[dev.id] = time.time()
        return dev

    def cached(self, device_id: str | None, api_key: str | None) -> DeviceInfo | None:
        """The in-memory check alone, never the database: the line's path, run on the event
        loop. None: unknown here (``authenticate`` may reload) or a wrong key."""
        dev = self._check(device_id, api_key)
        if dev is not None:
            self.last_seen[dev.id] = time.time()
        return dev

    def _check(self, device_id: str | None, api_key: str | None) -> DeviceInfo | None:
        dev = self._devices.get(device_id or "")
        presented = hash_key(api_key or "")
        # compare even for unknown devices, so timing does not tell which ids exist
        expected = dev.api_key_hash if dev else hash_key(secrets.token_hex(16))
        ok = hmac.compare_digest(presented, expected) and dev is not None and dev.enabled and bool(api_key)
        return dev if ok else None

    def create(self, device_id: str, side: str, drives_gpio: bool, name: str = "") -> tuple[DeviceInfo, str]:
        if side not in ("left", "right"):
            raise ValueError("side must be left or right")
        key = secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            s.merge(Device(id=device_id, side=side, drives_gpio=drives_gpio, api_key_hash=hash_key(key),
                           name=name, enabled=True))
        info = DeviceInfo(device_id, side, drives_gpio, hash_key(key), True, name)
        with self._lock:
            self._devices[device_id] = info
            self._written[device_id] = time.time()
        self._save_cache()
        return info, key

    def disable(self, device_id: str) -> None:
        with self.sessions.begin() as s:
            s.execute(update(Device).where(Device.id == device_id).values(enabled=False))
        with self._lock:
            if device_id in self._devices:
                self._devices[device_id] = replace(self._devices[device_id], enabled=False)
                self._written[device_id] = time.time()
        self._save_cache()

    def flush_last_seen(self) -> int:
        changed = {d: t for d, t in self.last_seen.items() if self._flushed.get(d) != t}
        if not changed:
            return 0
        with self.sessions.begin() as s:
            for d, t in changed.items():
                s.execute(update(Device).where(Device.id == d).values(
                    last_seen_at=datetime.fromtimestamp(t, UTC).replace(tzinfo=None)))
        self._flushed.update(changed)
        return len(changed)

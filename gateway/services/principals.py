"""People and applications with API keys (the WinForms app, an operator, Prometheus is not
one: it has its scrape token). Keys look like ``<id>.<secret>``: the id finds the record,
the secret (32 random bytes) is checked hash-to-hash in constant time; only the SHA-256 is
stored, the key is shown once. Held in memory and refreshed from the database like the
device registry, so keys keep working through a database outage."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from gateway.services.devices import hash_key
from store.models import Principal

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class PrincipalInfo:
    id: str
    name: str
    role: str
    api_key_hash: str
    enabled: bool = True


class PrincipalRegistry:
    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions
        self._by_id: dict[str, PrincipalInfo] = {}
        self._lock = threading.Lock()
        self.loaded_at = 0.0

    def refresh(self) -> None:
        with self.sessions() as s:
            rows = s.scalars(select(Principal)).all()
        with self._lock:
            self._by_id = {p.id: PrincipalInfo(p.id, p.name, p.role, p.api_key_hash, p.enabled) for p in rows}
        self.loaded_at = time.time()

    def create(self, name: str, role: str) -> tuple[PrincipalInfo, str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        pid = secrets.token_hex(6)
        key = f"{pid}.{secrets.token_urlsafe(32)}"
        with self.sessions.begin() as s:
            s.add(Principal(id=pid, name=name, role=role, api_key_hash=hash_key(key), enabled=True))
        info = PrincipalInfo(pid, name, role, hash_key(key))
        with self._lock:
            self._by_id[pid] = info
        return info, key

    def revoke(self, pid: str) -> bool:
        with self.sessions.begin() as s:
            n = s.execute(update(Principal).where(Principal.id == pid).values(enabled=False)).rowcount
        with self._lock:
            if pid in self._by_id:
                old = self._by_id[pid]
                self._by_id[pid] = PrincipalInfo(old.id, old.name, old.role, old.api_key_hash, False)
        return bool(n)

    def all(self) -> list[PrincipalInfo]:
        return sorted(self._by_id.values(), key=lambda p: p.id)

    def get(self, pid: str) -> PrincipalInfo | None:
        return self._by_id.get(pid)

    def check(self, key: str, reload: bool = True) -> PrincipalInfo | None:
        """The principal whose key this is. ``reload``: an id unknown here may have been
        created through another worker, so read the table again (the database: not on the
        event loop); without it, memory only."""
        pid = key.split(".", 1)[0] if "." in key else ""
        p = self._by_id.get(pid)
        if p is None and reload and pid and time.time() - self.loaded_at > 0.25:
            try:  # created through another worker a moment ago?
                self.refresh()
            except Exception:  # noqa: BLE001 - database away: judge on what we have
                self.loaded_at = time.time()
            p = self._by_id.get(pid)
        expected = p.api_key_hash if p else hash_key(secrets.token_hex(16))
        ok = hmac.compare_digest(hash_key(key), expected) and p is not None and p.enabled
        return p if ok else None

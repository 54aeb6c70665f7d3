"""Writes outbox rows into the database, idempotently (a re-sent row changes nothing)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from gateway.db.models import Inspection, SystemLog
from gateway.services.outbox import PendingRow

_DATES = ("created_at", "captured_at")


def _inspection(payload: dict) -> Inspection:
    data = dict(payload)
    for k in _DATES:
        if isinstance(data.get(k), str):
            data[k] = datetime.fromisoformat(data[k])
    return Inspection(**data)


class DbWriter:
    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def __call__(self, rows: list[PendingRow]) -> None:
        with self.sessions.begin() as s:
            ids = [r.id for r in rows if r.kind == "inspection"]
            have = set(s.scalars(select(Inspection.id).where(Inspection.id.in_(ids)))) if ids else set()
            for r in rows:
                if r.kind == "inspection":
                    if r.id in have:
                        # the same inspection again: a late right side completes a partial
                        # board; any other re-send is identical and changes nothing
                        s.merge(_inspection(r.payload))
                    else:
                        s.add(_inspection(r.payload))
                elif r.kind == "system_log":
                    data = dict(r.payload)
                    data["created_at"] = datetime.fromisoformat(data["created_at"])
                    s.merge(SystemLog(**data))
                else:
                    raise ValueError(f"unknown outbox row kind {r.kind!r}")

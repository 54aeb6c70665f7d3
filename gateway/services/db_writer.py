"""Writes outbox rows into the database, idempotently (a re-sent row changes nothing)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from gateway.services.outbox import PendingRow
from store.models import Inspection, SystemLog
from store.records import InspectionRecord


def _inspection(payload: dict) -> Inspection:
    # a payload that is not an inspection record (a key the table lacks, a wrong type) is a
    # pydantic ValidationError, a ValueError: the row's fault (see ``rejects``)
    return InspectionRecord.from_outbox(payload).to_model()


class DbWriter:
    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def rejects(self, e: Exception) -> bool:
        """Did the database refuse *these rows* (as opposed to being unavailable)? Integrity
        and data errors, and payloads that do not build a row, are the rows' fault. Anything
        else counts as the row's fault only if the database answers a ping right now."""
        if isinstance(e, IntegrityError | DataError | TypeError | ValueError | KeyError):
            return True
        if isinstance(e, InterfaceError | ProgrammingError | TimeoutError | OSError) or \
                getattr(e, "connection_invalidated", False):
            return False  # unreachable, or a schema not migrated yet: never the rows' fault
        try:
            with self.sessions() as s:
                s.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - it is the database
            return False
        return True

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

"""Writes outbox rows into the database, idempotently (a re-sent row changes nothing)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, ProgrammingError
from sqlalchemy.orm import sessionmaker

from gateway.services.outbox import PendingRow
from store.models import Inspection, SystemLog
from store.records import InspectionRecord

log = logging.getLogger("gateway.db_writer")


class DbWriter:
    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions
        self.duplicates = 0  # second answers to one request (another replica, Redis down): not stored

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
        # a payload that is not an inspection record (a key the table lacks, a wrong type) is a
        # pydantic ValidationError, a ValueError: the row's fault (see ``rejects``)
        with self.sessions.begin() as s:
            ids = [r.id for r in rows if r.kind == "inspection"]
            have = set(s.scalars(select(Inspection.id).where(Inspection.id.in_(ids)))) if ids else set()
            owners = self._request_owners(s, rows)
            new: list[dict] = []  # rows the table has not seen: one executemany, no ORM unit of work
            for r in rows:
                if r.kind == "inspection":
                    record = InspectionRecord.from_outbox(r.payload)
                    key = record.request_key
                    if key is not None and owners.setdefault(key, r.id) != r.id:
                        # the same request answered by another replica too (its retry came
                        # while Redis, the shared idempotency record, was down): the row
                        # already stored stands, this one is drained without a second row
                        self.duplicates += 1
                        log.warning("inspection %s is a second answer to request %s (kept: %s); not stored",
                                    r.id, key, owners[key])
                        continue
                    if r.id in have:
                        # the same inspection again: a late right side completes a partial
                        # board; any other re-send is identical and changes nothing
                        s.merge(record.to_model())
                    else:
                        new.append(record.model_dump())
                elif r.kind == "system_log":
                    data = dict(r.payload)
                    data["created_at"] = datetime.fromisoformat(data["created_at"])
                    s.merge(SystemLog(**data))
                else:
                    raise ValueError(f"unknown outbox row kind {r.kind!r}")
            if new:
                # the ORM's per-object flush was most of the drain's CPU, on the cores (and
                # under the GIL) the line's requests need (make bench-profile)
                s.execute(insert(Inspection), new)

    @staticmethod
    def _request_owners(s, rows: list[PendingRow]) -> dict[str, str]:
        """request key -> the inspection id already stored for it, for the keys in ``rows``."""
        keys = {r.payload.get("request_key") for r in rows if r.kind == "inspection" and isinstance(r.payload, dict)}
        keys.discard(None)
        if not keys:
            return {}
        found = s.execute(select(Inspection.request_key, Inspection.id).where(Inspection.request_key.in_(keys)))
        return {k: i for k, i in found}

"""The seed's ``system_logs`` table: notable events (partial boards, database outages and
recoveries, model promotions, device changes), written through the outbox like inspections
so they survive the same outages."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from gateway.services.outbox import Outbox, StorageError

log = logging.getLogger("gateway.events")


class SystemLogger:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def __call__(self, level: str, source: str, message: str, details: dict | None = None) -> None:
        row: dict[str, Any] = {"id": str(uuid.uuid4()), "level": level, "source": source, "message": message[:2000],
               "details": details, "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat()}
        try:
            self.outbox.put(row["id"], "system_log", row)
        except (OSError, StorageError) as e:  # the event is also in the process log; never fail a request
            log.warning("system log not stored: %r", e)
        log.log(logging.getLevelName(level.upper()) if isinstance(logging.getLevelName(level.upper()), int)
                else logging.INFO, "%s: %s", source, message)

"""The bounds on a request path's database calls, stated once (README "Bounded waits").

Reads (operator history, jobs, tuning, the shadow report) run on the read engine (2 s
sockets) under ``READ_TIMEOUT_S``, then a 503 ``database_unavailable``. Writes an operator or an admin waits for (a key stored before it
is shown, a job cancelled) run on the writers' engine under ``WRITE_TIMEOUT_S``: longer than
a read, because a write that is given up on may still land, and a retry then meets it. A
job's results download has a bound of its own (``EXPORT_TIMEOUT_S``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gateway.core.errors import ServiceUnavailable

__all__ = ["EXPORT_TIMEOUT_S", "READ_TIMEOUT_S", "WRITE_TIMEOUT_S", "export", "read", "write"]

READ_TIMEOUT_S = 2.0  # an operator's, a viewer's or an admin's read answers within this, or 503
WRITE_TIMEOUT_S = 5.0  # an admin's or operator's database write answers within this, or 503
# a job's results download reads every item (up to BATCH_MAX_ITEMS, 100,000): more than a
# read's 2 s when the database is well, so a bound of its own; on the read engine, whose
# 2 s sockets still make a dead database a quick 503
EXPORT_TIMEOUT_S = 30.0

T = TypeVar("T")


async def read(request: Request, fn: Callable[[sessionmaker], T], write: bool = False) -> T:
    """``fn(sessions)`` on the read engine, answered within ``READ_TIMEOUT_S`` or a 503.
    ``write``: on the writers' engine instead (an operator's feedback), under the same bound."""
    st = request.app.state
    return await _bounded(READ_TIMEOUT_S, "", fn, st.sessions if write else getattr(st, "read_sessions", st.sessions))


async def export(request: Request, fn: Callable[[sessionmaker], T]) -> T:
    """``fn(sessions)`` on the read engine, answered within ``EXPORT_TIMEOUT_S`` or a 503."""
    st = request.app.state
    return await _bounded(EXPORT_TIMEOUT_S, "", fn, getattr(st, "read_sessions", st.sessions))


async def write(fn: Callable[..., T], *args: Any, refused: str = "") -> T:
    """``fn(*args)`` (on the writers' engine) answered within ``WRITE_TIMEOUT_S`` or a 503
    ``database_unavailable``; ``refused`` says what did not happen (``key not created``) when
    the database refused. A write given up on at the bound runs on in its thread and may
    still land, so that answer says the outcome is unknown instead."""
    return await _bounded(WRITE_TIMEOUT_S, refused, fn, *args,
                          late="; the change may still be applied: check before retrying")


async def _bounded(timeout_s: float, refused: str, fn: Callable[..., T], *args: Any, late: str = "") -> T:
    """``late``: what the answer adds when the bound passed (the call itself runs on)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout_s)
    except TimeoutError as e:
        raise ServiceUnavailable(f"the database did not answer within {timeout_s:.0f} s{late}",
                                 "database_unavailable", 5) from e
    except SQLAlchemyError as e:
        suffix = f": {refused}" if refused else ""
        raise ServiceUnavailable(f"the database is unavailable{suffix}", "database_unavailable", 5) from e

"""Engine and sessions. Sync SQLAlchemy (pymysql / sqlite3) used from a thread pool by the
async gateway, so no database call blocks the event loop."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker


def make_engine(url: str, read_timeout_s: float = 10, connect_timeout_s: float = 3) -> Engine:
    """``read_timeout_s``: the drainer's writes get 10 s; operator reads use an engine of
    their own with 2 s, so a blackholed database frees their threads quickly."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # MySQL/MariaDB through pymysql: short timeouts so an outage is noticed quickly and the
    # outbox keeps the rows; pre-ping drops connections that died with the server
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800, pool_timeout=connect_timeout_s,
                         connect_args={"connect_timeout": max(1, round(connect_timeout_s)),
                                       "read_timeout": max(1, round(read_timeout_s)),
                                       "write_timeout": max(1, round(read_timeout_s))})


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)

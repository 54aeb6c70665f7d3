"""Alembic, driven from code: ``upgrade(url)`` brings a database to the newest schema.
The gateway runs it at start (``python -m store.migrate`` does the same by hand).

Several gateway workers (and pods) start at once: the upgrade runs under a lock (MySQL's
``GET_LOCK`` on the server; a file lock beside an SQLite file), so only one migrates and
the others find the schema done, instead of racing ("Table 'alembic_version' already
exists")."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


LOCK_NAME = "pcb_gateway_migrate"


@contextmanager
def _migration_lock(url: str, timeout_s: int = 120):
    if url.startswith("sqlite"):
        import fcntl

        path = url.split("///", 1)[-1]
        if not path or path == ":memory:":
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": LOCK_NAME, "t": timeout_s}).scalar()
            if got != 1:
                raise TimeoutError(f"another gateway held the migration lock for {timeout_s} s")
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": LOCK_NAME})
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    with _migration_lock(url):
        command.upgrade(alembic_config(url), revision)


if __name__ == "__main__":
    from settings.environment import get_settings

    upgrade(sys.argv[1] if len(sys.argv) > 1 else get_settings().database_url)

"""Alembic, driven from code: ``upgrade(url)`` brings a database to the newest schema.
The gateway runs it at start (``python -m gateway.db.migrate`` does the same by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


if __name__ == "__main__":
    from gateway.core.config import get_settings

    upgrade(sys.argv[1] if len(sys.argv) > 1 else get_settings().database_url)

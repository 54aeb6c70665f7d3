"""The database both the gateway and the batch engine write: SQLAlchemy models
(``models.py``), engines and sessions (``session.py``), Alembic migrations run at start
under a lock (``migrate.py``, ``migrations/``). May import: SQLAlchemy, Alembic,
``settings`` for the database URL; never the gateway."""

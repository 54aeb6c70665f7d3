"""The FastAPI gateway: the line's HTTP edge (inspection, pairing, the outbox), the operators'
API and dashboard, the enhancement service's API, admin routes, and the settings every
process shares (``core/config.py``). May import: ``pcb``, ``enhance``, ``inference``
(Triton), ``store`` (database), ``batch`` (its engine API), ``serving`` (hot-swap admin)."""

"""The FastAPI gateway: the line's HTTP edge (inspection, pairing, the outbox), the operators'
API and dashboard, the enhancement service's API, admin routes. May import: ``pcb``,
``enhance``, ``inference`` (Triton), ``settings`` (the settings every process shares),
``store`` (database), ``batch`` (its engine API), ``serving`` (hot-swap admin)."""

"""The batch engine: re-inspection of image archives and enhancement batches on the same
Triton as the line, run by Celery workers (``python -m batch worker``) or embedded in the
gateway (``memory://``).

Owns jobs, chunks and items (``store.py``), scheduling and priority aging, the workers'
chunk runner, the resource monitor, the auto-tuner, sources (folders, defensive ZIPs) and
results. May import: ``store`` (tables, sessions), ``inference`` (Triton), ``pcb``,
``settings`` (the one settings class) and Celery. Never the gateway (tests/test_layout.py
checks), so a worker process starts without the HTTP app (tests/test_batch_parts.py
checks)."""

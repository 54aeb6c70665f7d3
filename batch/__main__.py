"""Batch engine CLI.

    python -m batch run DIR|ZIP [--priority high] [--out results/]   submit, watch, export
    python -m batch worker [--concurrency 6]                          a Celery worker
    python -m batch tune [--images DIR] [--sweep]                     auto-tune and record
    python -m batch list | status JOB | cancel JOB | retry JOB | export JOB --out DIR

Settings come from the environment like the gateway's (DATABASE_URL, TRITON_URL,
BATCH_BROKER_URL, ...). With the default ``memory://`` broker, ``run`` starts a worker in this
process; with RabbitMQ it only submits and watches, and workers anywhere do the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from settings.environment import get_settings


def _engine(sweep: bool = True, start: bool = True):
    from batch.engine import BatchEngine
    from store.migrate import upgrade
    from store.session import make_engine, make_sessionmaker

    s = get_settings()
    upgrade(s.database_url)
    eng = BatchEngine(s, make_sessionmaker(make_engine(s.database_url)))
    return eng.start(sweep=sweep) if start else eng


def _sources(path: Path, job_dir: Path, all_files: bool) -> list[tuple[str, str]]:
    from batch import sources

    s = get_settings()
    if path.is_dir():
        return sources.from_dir(path, all_files=all_files)
    if path.suffix.lower() == ".zip":
        return sources.extract_zip(path, job_dir, s.batch_max_items, s.batch_max_upload_bytes)
    raise SystemExit(f"{path}: give a folder or a .zip file")


def watch(store, job_id: str, poll_s: float = 0.5) -> dict:
    from tqdm import tqdm

    p = store.progress(job_id)
    with tqdm(total=p["total"], unit="img", dynamic_ncols=True) as bar:
        while True:
            p = store.progress(job_id)
            c = p["counts"]
            bar.n = p["total"] - c["pending"] - c["processing"]
            bar.set_postfix(ok=c["completed"], failed=c["failed"], eta=p["eta_s"], refresh=False)
            bar.refresh()
            if p["state"] != "running":
                return p
            time.sleep(poll_s)


def cmd_run(a) -> int:
    eng = _engine()
    staging = Path(tempfile.mkdtemp(prefix="zip-", dir=_mk(get_settings().batch_data_dir)))
    try:
        job_id = eng.submit(_sources(Path(a.source), staging, a.all_files), priority=a.priority,
                            kind=a.kind, name=a.name or Path(a.source).name, chunk_size=a.chunk_size)
        print(f"job {job_id}", file=sys.stderr)
        if a.no_wait:
            return 0
        p = watch(eng.store, job_id)
        if a.out:
            from batch.results import write_all

            for f in write_all(a.out, p, eng.store.items(job_id)):
                print(f)
        print(json.dumps({k: p[k] for k in ("state", "counts", "items_per_s", "elapsed_s")}))
        return 0 if p["state"] == "completed" else 1
    finally:
        eng.stop()


def _mk(d: str) -> str:
    Path(d).mkdir(parents=True, exist_ok=True)
    return d


def cmd_worker(a) -> int:
    from prometheus_client import start_http_server

    from batch import tasks
    from batch.celery_app import celery_app
    from batch.runner import WORKER_REGISTRY

    s = get_settings()
    if s.batch_broker_url.startswith("memory://"):
        raise SystemExit("BATCH_BROKER_URL is memory://: a separate worker needs a real broker "
                         "(amqp://... or redis://...); the gateway runs the embedded one itself")
    from serving import cpu_priority

    # before any thread starts, so the pool's threads inherit it
    logging.info("batch worker CPU priority: %s", cpu_priority.lower(s.batch_cpu_priority))
    port = a.metrics_port if a.metrics_port is not None else s.batch_metrics_port
    if port:
        try:
            start_http_server(port, registry=WORKER_REGISTRY)
        except OSError as e:
            logging.warning("worker metrics port %d: %s (metrics off)", port, e)
    from batch.runner import Runtime

    _engine()  # migrations + the lease sweeper; every worker runs one, duplicates are harmless
    # --concurrency: the most chunks in Triton at once (the controller's ceiling); the pool
    # has room for those, the chunk read ahead and one writing its results
    rt = Runtime(s, tasks.send, max_inflight=a.concurrency).start()
    tasks.set_runtime(rt)
    concurrency = rt.pool_size
    celery_app.worker_main(["worker", "--pool=threads", f"--concurrency={concurrency}", f"--loglevel={a.loglevel}",
                            "-Q", s.batch_queue, "--without-mingle", "--without-gossip",
                            f"--hostname=batch@{socket.gethostname()}-{os.getpid()}"])
    return 0


def cmd_tune(a) -> int:
    from batch import tasks
    from batch.probe import EngineProbe
    from batch.runner import Runtime
    from batch.tuning import AutoTuner, record

    s = get_settings()
    eng = _engine(sweep=False, start=False)
    probe = EngineProbe(Runtime(s, tasks.send, eng.store), _tune_files(a.images, Path(s.batch_data_dir)))
    tuner = AutoTuner(probe, items_per_point=a.items)
    best = tuner.sweep() if a.sweep else tuner.tune((s.batch_chunk_size, s.batch_concurrency))
    value = record(eng.store.sessions, best, list(tuner.points.values()))
    for p in sorted(tuner.points.values(), key=lambda p: (p.batch_size, p.concurrency)):
        mark = "  <- best" if p == best else ""
        print(f"batch {p.batch_size:>3}  concurrency {p.concurrency}  {p.items_per_s:8.1f} items/s{mark}")
    print(json.dumps({k: value[k] for k in ("batch_size", "concurrency", "items_per_s")}))
    return 0


def _tune_files(folder: str | None, data_dir: Path) -> list[tuple[str, str]]:
    """Sample images on disk (the probe reads files like a real job): the given folder, or
    synthetic boards written once under BATCH_DATA_DIR."""
    from batch.sources import from_dir

    if folder:
        return from_dir(Path(folder))[:64]
    import cv2

    from pcb.synthetic import render_board

    samples = data_dir / "tuning-samples"
    samples.mkdir(parents=True, exist_ok=True)
    for i in range(32):
        path = samples / f"{i:02d}.jpg"
        if not path.exists():
            path.write_bytes(cv2.imencode(".jpg", render_board(i).image)[1].tobytes())
    return from_dir(samples)


def cmd_simple(a) -> int:
    eng = _engine(sweep=False, start=False)
    st = eng.store
    if a.cmd == "list":
        for j in st.jobs():
            print(json.dumps({k: v for k, v in st.progress(j.id).items()
                              if k in ("job_id", "name", "state", "priority", "total", "counts")}))
    elif a.cmd == "status":
        print(json.dumps(st.progress(a.job), indent=1))
    elif a.cmd == "cancel":
        eng.cancel(a.job)
        print(json.dumps(st.progress(a.job)["counts"]))
    elif a.cmd == "retry":
        print(f"{eng.retry(a.job)} failed item(s) sent again")
    elif a.cmd == "export":
        from batch.results import write_all

        for f in write_all(a.out, st.progress(a.job), st.items(a.job)):
            print(f)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit a folder or ZIP, show progress, export results")
    r.add_argument("source")
    r.add_argument("--priority", default="normal", choices=["urgent", "high", "normal", "low"])
    r.add_argument("--kind", default="inspect", choices=["inspect", "enhance"])
    r.add_argument("--name", default="")
    r.add_argument("--out", help="write results.json/.csv, summary.json, report.html here")
    r.add_argument("--chunk-size", type=int, help="items per task (default: the auto-tuner's pick)")
    r.add_argument("--all-files", action="store_true", help="also non-image files (they fail visibly)")
    r.add_argument("--no-wait", action="store_true")
    r.set_defaults(fn=cmd_run)
    w = sub.add_parser("worker", help="run a Celery worker (needs a real broker)")
    w.add_argument("--concurrency", type=int, help="most chunks in Triton at once (default BATCH_MAX_INFLIGHT)")
    w.add_argument("--metrics-port", type=int)
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(fn=cmd_worker)
    t = sub.add_parser("tune", help="measure (batch size, concurrency) against Triton, record the best")
    t.add_argument("--images", help="folder of sample images (default: synthetic boards)")
    t.add_argument("--items", type=int, default=64, help="images per measured point")
    t.add_argument("--sweep", action="store_true", help="measure the whole grid instead of hill-climbing")
    t.set_defaults(fn=cmd_tune)
    sub.add_parser("list").set_defaults(fn=cmd_simple)
    for name in ("status", "cancel", "retry"):
        p = sub.add_parser(name)
        p.add_argument("job")
        p.set_defaults(fn=cmd_simple)
    e = sub.add_parser("export")
    e.add_argument("job")
    e.add_argument("--out", required=True)
    e.set_defaults(fn=cmd_simple)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())

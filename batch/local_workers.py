"""Batch workers (``python -m batch worker``) started as local subprocesses, each RabbitMQ run
with a queue of its own (deleted afterwards): for the benchmarks and the tests, never the
product's own path (deployments start workers with systemd, compose or Kubernetes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


class Worker:
    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2):
        self.env = {**os.environ, "BATCH_METRICS_PORT": "0", **env}
        self.log, self.concurrency = log, concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "batch", "worker",
                                      "--concurrency", str(self.concurrency), "--loglevel", os.environ.get("BATCH_TEST_LOGLEVEL", "WARNING")],
                                     cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to the broker, unacked messages go back to the queue."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def rabbit_queue(prefix: str):
    """A queue name of this test's own on the machine's RabbitMQ, deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        delete_queue(name)


def delete_queue(name: str) -> None:
    from kombu import Connection

    with Connection(RABBIT, connect_timeout=3) as conn:
        ch = conn.channel()
        try:
            ch.queue_delete(name)
            ch.exchange_delete(name)
        except Exception:  # noqa: BLE001 - never declared
            pass


def wait_for(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s")

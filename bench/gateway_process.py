"""One real gateway process (uvicorn, one worker) for the line benches: SQLite, a local
outbox, in-process pairing, no image archive, no rate limit - ``make demo``'s defaults.
Stopping and starting it again keeps its database and outbox (a restart, not a new line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT
from bench.line_load import ADMIN
from serving.cpu_server import free_port, wait_http


class GatewayProcess:
    def __init__(self, triton_grpc_url: str, work: Path, **env_extra: str):
        self.work = work
        self.port = free_port()
        self.env = {**os.environ, "TRITON_URL": triton_grpc_url, "DATABASE_URL": f"sqlite:///{work / 'gw.db'}",
                    "OUTBOX_PATH": str(work / "outbox.db"), "IMAGE_DIR": str(work / "images"),
                    "IMAGE_POLICY": "none", "ADMIN_TOKEN": ADMIN["Authorization"][7:], "RATE_LIMIT_PER_S": "0",
                    "LOG_LEVEL": "WARNING", **env_extra}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> GatewayProcess:
        """Started and ready: ``/health/ready`` answers 200, as a balancer would wait for."""
        log = open(self.work / "gateway.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.main:app", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--no-access-log", "--log-level", "warning"],
                                     cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_http(self.url + "/health/ready", timeout, self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

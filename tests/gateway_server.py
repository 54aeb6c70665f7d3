"""A real gateway process (uvicorn) for browser and end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.cpu_server import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent


class GatewayServer:
    def __init__(self, env: dict[str, str], log: Path, workers: int = 1):
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log, self.workers = log, workers
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> GatewayServer:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--no-access-log"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(self.url + "/health", timeout, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise type(e)(f"gateway not up: {e}; see {self.log}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)

"""A real gateway process (uvicorn) for browser and end-to-end tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

from serving.cpu_server import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent


class GatewayServer:
    def __init__(self, env: dict[str, str], log: Path, workers: int = 1, tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.log, self.workers = log, workers
        self.tls = tls  # (certificate, key): serve HTTPS
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> GatewayServer:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--no-access-log",
             *(["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])] if self.tls else [])],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # HTTPS: the test's own CA is checked by the tests themselves; here only "is it up"
            ctx = ssl._create_unverified_context() if self.tls else None  # noqa: S323
            wait_http(self.url + "/health", timeout, self.proc, ctx)
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

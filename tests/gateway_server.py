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
    def __init__(self, env: dict[str, str], log: Path, workers: int = 1, tls: tuple[Path, Path] | None = None,
                 factory: str | None = None):
        self.port = free_port()
        # factory: "module:function" building the app (uvicorn --factory), for a test's own
        # variant of the real gateway; by default the gateway itself
        self.factory = factory
        self.env = {**os.environ, **env}
        self.log, self.workers = log, workers
        self.tls = tls  # (certificate, key): serve HTTPS, through gateway.serve as the image does
        assert not (tls and (workers != 1 or factory)), "gateway.serve runs the gateway itself, one worker"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> GatewayServer:
        out = open(self.log, "ab")
        if self.tls:  # the deployed entry point: its settings (TLS_CERT_FILE, TLS_KEY_FILE) turn HTTPS on
            cmd = [sys.executable, "-m", "gateway.serve"]
            env = {**self.env, "TLS_CERT_FILE": str(self.tls[0]), "TLS_KEY_FILE": str(self.tls[1]),
                   "HOST": "127.0.0.1", "PORT": str(self.port)}
        else:
            cmd = [sys.executable, "-m", "uvicorn", *([self.factory, "--factory"] if self.factory else ["gateway.main:app"]),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers), "--no-access-log"]
            env = self.env
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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

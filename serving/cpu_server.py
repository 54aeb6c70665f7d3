"""Start the real Triton server that ships inside ``nvidia-pytriton`` on the CPU.

The bundle has the python backend only, so the CPU layout of the repository runs every
model (the ONNX detector included, through onnxruntime) as a python-backend model.

Recipe (checked on these machines, see PLATFORM-NOTES): copy the bundled server to a
writable place, put the python-3.11 stub into its python backend, put the bundle's shared
libraries on LD_LIBRARY_PATH, and run with the virtualenv's ``bin`` first on PATH so the
stub imports numpy/OpenCV/onnxruntime/``pcb`` from this environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = ROOT / "model_repository"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def prepare_server(dest: Path = ROOT / "build" / "tritonserver") -> Path:
    """Copy the bundled server once into ``dest`` with the right python stub; idempotent."""
    sp = _site_packages()
    bundle = sp / "pytriton" / "tritonserver"
    if not bundle.exists():
        raise RuntimeError("nvidia-pytriton is not installed: run `make venv` first")
    stub = bundle / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    marker = dest / ".prepared"
    if not marker.exists():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("python_backend_stubs"))
        shutil.copy2(stub, dest / "backends" / "python" / "triton_python_backend_stub")
        marker.write_text(str(bundle) + "\n")
    return dest


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    libs = str(_site_packages() / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    # the python models import pcb/ from the project even without an editable install
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # onnxruntime and OpenCV inside the python models: one thread pool each, sized by the
    # models themselves, not one per core per instance
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen | None = None, context=None) -> None:
    """Poll ``url`` until it answers 2xx; fail early if ``proc`` (the server) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            name = proc.args[0] if isinstance(proc.args, (list, tuple)) and proc.args else "server"
            raise RuntimeError(f"{name!s} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if 200 <= r.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonServer:
    """A running CPU Triton server (a context manager; stops the server on exit)."""

    repository: Path = DEFAULT_REPOSITORY
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    load: list[str] = field(default_factory=lambda: ["*"])
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def command(self) -> list[str]:
        server = prepare_server()
        cmd = [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={server / 'backends'}",
            "--model-control-mode=explicit",
            f"--http-port={self.ports['http']}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
            # python models re-import from scratch per instance; keep start-up quick
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=4194304",
        ]
        cmd += [f"--load-model={m}" for m in self.load]
        return cmd + self.extra_args

    def start(self, timeout: float = 120) -> TritonServer:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=server_env(), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_http(f"http://{self.http_url}/v2/health/ready", timeout, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise type(e)(f"tritonserver not ready: {e}; see {self.log_file}") from None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> TritonServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.cpu_server",
                                description="Run the CPU Triton server (PyPI bundle) on a model repository.")
    p.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--http-port", type=int, default=DEFAULT_PORTS["http"])
    p.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS["grpc"])
    p.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS["metrics"])
    p.add_argument("--load-model", action="append", help="model to load at start (default: all)")
    args = p.parse_args(argv)
    srv = TritonServer(
        repository=args.repository,
        ports={"http": args.http_port, "grpc": args.grpc_port, "metrics": args.metrics_port},
        load=args.load_model or ["*"],
    )
    os.execvpe(srv.command()[0], srv.command(), server_env())  # foreground: Ctrl-C stops it


if __name__ == "__main__":
    raise SystemExit(main())

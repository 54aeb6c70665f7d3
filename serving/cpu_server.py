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
import random
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


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    # 0.0.0.0 without SO_REUSEADDR: fails if anything on any address holds the port, which
    # is how Triton binds its HTTP and gRPC ports
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port that is free now, chosen below the kernel's ephemeral range.

    ``bind(0)`` hands out an ephemeral port: between that and the server's own bind, any
    outgoing connection of the test run (gRPC, HTTP, the database) can take the same port,
    and a server then dies on "already in use". Ports below the range are never taken that
    way, and this process never hands one out twice.
    """
    low, _ = _ephemeral_range()
    lo, hi = (20000, low - 1) if low > 21000 else (1024, low - 1)
    for _ in range(200):
        port = random.randint(lo, hi) if hi > lo else 0
        if port and port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # no room below the range: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in DEFAULT_PORTS}


PORT_TRIES = 3


def _log_size(log_file: Path | None) -> int:
    try:
        return Path(log_file).stat().st_size if log_file else 0
    except OSError:
        return 0


def _log_tail(log_file: Path | None, since: int = 0, lines: int = 15) -> str:
    """The end of the server's log (from byte ``since``), for an error that a CI run prints
    but whose files it drops."""
    if log_file is None:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(since)
            tail = f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- end of the server log ---\n" + "\n".join(tail)


@dataclass
class TritonServer:
    """A running CPU Triton server (a context manager; stops the server on exit)."""

    repository: Path = DEFAULT_REPOSITORY
    # None: free ports, chosen again if the server loses one of them to another process
    # between the choice and its bind
    ports: dict[str, int] | None = None
    load: list[str] = field(default_factory=lambda: ["*"])
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self._pick_ports = self.ports is None
        self._log_start = 0
        if self.ports is None:
            self.ports = free_ports()

    def _port(self, name: str) -> int:
        assert self.ports is not None  # set in __post_init__
        return self.ports[name]

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self._port('http')}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self._port('grpc')}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self._port('metrics')}/metrics"

    def command(self) -> list[str]:
        server = prepare_server()
        cmd = [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={server / 'backends'}",
            "--model-control-mode=explicit",
            f"--http-port={self._port('http')}",
            f"--grpc-port={self._port('grpc')}",
            f"--metrics-port={self._port('metrics')}",
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
        for attempt in range(1, PORT_TRIES + 1):
            self._log_start = _log_size(self.log_file)
            out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
            self.proc = subprocess.Popen(self.command(), env=server_env(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                lost_a_port = "already in use" in _log_tail(self.log_file, self._log_start, 40)
                if not (self._pick_ports and attempt < PORT_TRIES and lost_a_port):
                    raise
                self.ports = free_ports()
            finally:
                if not isinstance(out, int):  # the child holds its own copy of the log
                    out.close()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float) -> None:
        try:
            wait_http(f"http://{self.http_url}/v2/health/ready", timeout, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            tail = _log_tail(self.log_file, self._log_start)
            raise type(e)(f"tritonserver not ready: {e}; see {self.log_file}{tail}") from None

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

"""Shared by the benchmarks: bench images, the bench server, the report file."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import cv2
import psutil

from pcb.synthetic import render_board
from serving.repository import EXPORTED

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
REPORT = ROOT / "docs" / "benchmarks.md"
WEIGHTS = ROOT / "models" / "pcb_yolov8n.pt"


def bench_images(n: int = 16, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """Camera-like JPEGs (640x480, q85 as the seed's Pi sends) of boards with defects."""
    out = []
    for i in range(n):
        img = render_board(7000 + i, size=size).image
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        out.append(buf.tobytes())
    return out


def bench_repository(dest: Path = OUT / "model_repository") -> Path:
    """A copy of the repository with the committed demo detector exported as version 1."""
    from export import onnx_target

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "model_repository", dest, ignore=shutil.ignore_patterns("__pycache__", *EXPORTED))
    onnx_target.add_version(dest, WEIGHTS, imgsz=320, max_batch=16)
    return dest


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer (from tritonclient 2.50) links libb64 and libcudart.so.12: both ship in
    nvidia-pytriton's bundled libraries under hashed names, linked here under the plain ones."""
    libs = ROOT / "build" / "lib"
    libs.mkdir(parents=True, exist_ok=True)
    bundled = Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"
    for plain, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        found = sorted(bundled.glob(pattern))
        link = libs / plain
        if found and not link.exists():
            link.symlink_to(found[0])
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, no GPU, {platform.platform()}"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, body: str) -> None:
    """Replace the section between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in
    docs/benchmarks.md (appending it the first time), so each bench rewrites only its part."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n\nWritten by `make bench`; each section by its own command.\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)

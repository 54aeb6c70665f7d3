"""Shared fixtures: a model repository with the demo detector exported into it, and a real
CPU Triton server on free ports (stopped by the fixture, also when a test fails). The
enhancement models live in a repository and server of their own (``enhance_repository``,
``enhance_triton``) so the inspection tests' server starts as fast as before."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from serving.cpu_server import TritonServer
from serving.repository import EXPORTED

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = Path(os.environ.get("PCB_WEIGHTS", ROOT / "models" / "pcb_yolov8n.pt"))

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach for the hub in tests


def make_repository(dest: Path, weights: Path = WEIGHTS, split: bool = False, decode: str = "cpu") -> Path:
    """A copy of model_repository/ (pipeline models) with ``weights`` exported as version 1.
    ``split``: the GPU layout's pipeline (serving/split_layout/) with onnxruntime standing in
    for TensorRT, so its pre/post-processing models run for real here; ``decode``: its
    pre-processing's (``torch-cpu``: the GPU decode path's code, on the CPU)."""
    from export import onnx_target
    from serving.gpu_repository import assemble

    if split:
        assemble(dest, decode=decode)
        for name in ENHANCE_MODELS:
            shutil.rmtree(dest / name, ignore_errors=True)
    else:
        shutil.copytree(ROOT / "model_repository", dest,
                        ignore=shutil.ignore_patterns("__pycache__", *EXPORTED, *ENHANCE_MODELS))
    onnx_target.add_version(dest, weights, imgsz=320, max_batch=16)
    return dest


ENHANCE_MODELS = ("face_enhance", "face_restorer", "bg_upsampler")


def make_enhance_repository(dest: Path) -> Path:
    """face_enhance (from model_repository/) + face_restorer and bg_upsampler exported from a
    fixed random init in the narrow configuration (GFPGAN 512 px topology at 1/16 width)."""
    from export.enhance_target import EnhanceExport, add_version

    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "model_repository" / "face_enhance", dest / "face_enhance",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for kind in ("gfpgan", "realesrgan"):
        add_version(EnhanceExport(kind=kind, repository=dest, narrow=True))
    return dest


def start_triton(repository: Path, log: Path) -> TritonServer:
    srv = TritonServer(repository=repository, log_file=log)
    return srv.start(timeout=180)


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="session")
def triton(repository, tmp_path_factory):
    srv = start_triton(repository, tmp_path_factory.mktemp("triton") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def split_triton(tmp_path_factory):
    """The split (GPU) layout on a CPU Triton of its own."""
    repo = make_repository(tmp_path_factory.mktemp("split_repo") / "model_repository", split=True)
    srv = start_triton(repo, tmp_path_factory.mktemp("split_triton") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def split_torch_triton(tmp_path_factory):
    """The split layout with the GPU layout's batched pre-processing adapter (torchvision
    decode, torch letterbox, DLPack outputs) running on the CPU."""
    repo = make_repository(tmp_path_factory.mktemp("split_torch_repo") / "model_repository", split=True,
                           decode="torch-cpu")
    srv = start_triton(repo, tmp_path_factory.mktemp("split_torch_triton") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def enhance_repository(tmp_path_factory) -> Path:
    return make_enhance_repository(tmp_path_factory.mktemp("enhance_repo") / "model_repository")


@pytest.fixture(scope="session")
def enhance_triton(enhance_repository, tmp_path_factory):
    srv = start_triton(enhance_repository, tmp_path_factory.mktemp("enhance_triton") / "triton.log")
    try:
        yield srv
    finally:
        srv.stop()


def encode(img: np.ndarray, ext: str = ".jpg", **params) -> bytes:
    flags = [cv2.IMWRITE_JPEG_QUALITY, params.get("quality", 90)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, img, flags)
    assert ok
    return buf.tobytes()


@contextmanager
def fresh_mariadb():
    """A database of its own on the machine's MariaDB (never the machine's service itself),
    dropped afterwards; yields its name."""
    import uuid

    import pymysql

    name = f"pcb_test_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    conn.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        # sessions a test left open on its own database (a gateway thread cut off mid-query)
        # would hold metadata locks and stall the DROP: end them first
        cur = conn.cursor()
        cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (name,))
        for (pid,) in cur.fetchall():
            try:
                cur.execute(f"KILL {int(pid)}")
            except pymysql.err.OperationalError:  # it ended by itself meanwhile
                pass
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


@pytest.fixture
def mariadb():
    """A fresh database behind a TcpProxy (cut it for an outage): (proxy, SQLAlchemy URL)."""
    from tests.tcp_proxy import TcpProxy

    with fresh_mariadb() as name:
        proxy = TcpProxy("127.0.0.1", 3306)
        try:
            yield proxy, f"mysql+pymysql://root:@127.0.0.1:{proxy.port}/{name}"
        finally:
            proxy.close()


async def close_redis_stores(stores, prefix: str) -> None:
    """Drop every key a test wrote under its own prefix on the machine's Redis, then close
    the stores (each stands for one gateway worker)."""
    keys = await stores[0].redis.keys(f"{prefix}*")
    if keys:
        await stores[0].redis.delete(*keys)
    for s in stores:
        await s.close()

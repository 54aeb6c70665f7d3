"""Photo enhancement behind the API: accepted photos go to disk, a bounded pool of workers
sends them to the ``face_enhance`` model in Triton (where the networks stay resident and
the face crops of concurrent photos are restored in one batch), results go to disk and are
deleted after a TTL.

Bounded: at most ``concurrency`` photos in Triton at once, at most ``max_queue`` waiting
(beyond that an upload is refused with 503, never buffered), files on disk not in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import psutil

from gateway.core.errors import NotFound, ServiceUnavailable
from gateway.core.metrics import ENHANCE_DURATION, ENHANCE_FACES, ENHANCE_QUEUE_DEPTH
from gateway.services.background import BackgroundTask
from gateway.services.enhance_tasks import TERMINAL, Batch, Task, TaskStore, new_id
from gateway.services.triton import TritonService
from inference import ENHANCE_MODEL

log = logging.getLogger("gateway.enhance")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str | None, index: int) -> str:
    stem = _SAFE.sub("_", Path(name or "").stem)[:60].strip("._") or f"photo_{index:02d}"
    return stem


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COPY_CHUNK = 1 << 20


class _Sink:
    """Where ``zipfile`` writes a streamed archive: it has no ``tell``/``seek``, so zipfile
    counts positions itself and writes data descriptors; ``drain`` hands over what is new."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, b) -> int:
        self._parts.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            out = b"".join(self._parts)
            self._parts.clear()
            yield out


def _open_result(t: Task) -> BinaryIO | None:
    """The task's result file, open (so a clean-up that removes it now cannot cut the
    archive short), or None when it has none."""
    if t.state != "completed" or t.result_path is None:
        return None
    try:
        return open(t.result_path, "rb")
    except OSError:
        return None


class EnhanceService(BackgroundTask):
    def __init__(self, triton: TritonService, directory: str | Path, concurrency: int = 4, max_queue: int = 200, ttl_s: float = 3600.0, timeout_s: float = 300.0,
                 cleanup_every_s: float = 30.0):
        self.triton = triton
        # one folder per gateway process: its tasks are its own (see enhance_tasks.py)
        self.root = Path(directory)
        self.dir = self.root / str(os.getpid())
        self.concurrency, self.max_queue, self.ttl_s, self.timeout_s = concurrency, max_queue, ttl_s, timeout_s
        self.cleanup_every_s = cleanup_every_s
        self.store = TaskStore()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, asyncio.Task] = {}
        self._workers: list[asyncio.Task] = []
        self._recent: deque = deque(maxlen=500)  # (finished_at, seconds, faces) of completed photos
        self.completed_total = 0
        self.faces_total = 0
        self.started_at = time.time()
        self._stopping = False
        self._reserved = 0  # photos of uploads being written: counted against max_queue already

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        # leftovers of processes that are gone belong to tasks nobody knows any more
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and d.name.isdigit() and not psutil.pid_exists(int(d.name)):
                    shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._workers = [asyncio.create_task(self._worker(), name=f"enhance-{i}") for i in range(self.concurrency)]
        self._start(self._cleanup_loop, "enhance-cleanup")

    async def stop(self) -> None:
        self._stopping = True
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        await super().stop()

    # submission ------------------------------------------------------------------------
    async def submit(self, files: list[tuple[str | None, BinaryIO]], options: dict) -> tuple[Batch, list[Task]]:
        """Copy the photos (already validated, still in the upload's spooled files) to disk
        in a worker thread and queue them. All or nothing: the batch directory appears by
        rename once every file is written."""
        waiting = self.queue.qsize() + self._reserved
        if waiting + len(files) > self.max_queue:
            raise ServiceUnavailable(f"{waiting} photos are waiting; try again later",
                                     "enhance_queue_full", retry_after_s=5)
        batch_id = new_id()
        # the slots are taken before the await: uploads written at the same time cannot
        # together pass the bound that each passed alone
        self._reserved += len(files)
        try:
            tasks = await asyncio.to_thread(self._stage, batch_id, files, options)
        except OSError as e:
            log.error("enhancement upload could not be written: %s", e)
            raise ServiceUnavailable("the enhancement volume cannot take the photos now",
                                     "storage_unavailable", retry_after_s=5) from None
        finally:
            self._reserved -= len(files)
        final = self.dir / batch_id
        batch = Batch(batch_id, [t.id for t in tasks], final)
        self.store.add(batch, tasks)
        for t in tasks:
            self.queue.put_nowait(t.id)
        ENHANCE_QUEUE_DEPTH.set(self.queue.qsize())
        return batch, tasks

    def _stage(self, batch_id: str, files: list[tuple[str | None, BinaryIO]], options: dict) -> list[Task]:
        final = self.dir / batch_id
        staging = self.dir / f".{batch_id}.partial"
        staging.mkdir(parents=True)
        tasks = []
        try:
            for i, (name, src) in enumerate(files):
                src.seek(0)
                ext = "png" if src.read(8) == PNG_MAGIC else "jpg"
                src.seek(0)
                tid = new_id()
                with open(staging / f"{tid}.in.{ext}", "wb") as dst:
                    shutil.copyfileobj(src, dst, COPY_CHUNK)
                tasks.append(Task(id=tid, filename=name or f"photo_{i:02d}.{ext}", index=i, batch_id=batch_id,
                                  input_path=final / f"{tid}.in.{ext}", options=options))
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return tasks

    # lookups ---------------------------------------------------------------------------
    def task(self, task_id: str) -> Task:
        t = self.store.tasks.get(task_id)
        if t is None:
            raise NotFound(f"no enhancement task {task_id} (unknown or expired)", "task_not_found")
        return t

    def batch(self, batch_id: str) -> Batch:
        b = self.store.batches.get(batch_id)
        if b is None:
            raise NotFound(f"no enhancement batch {batch_id} (unknown or expired)", "batch_not_found")
        return b

    def cancel(self, tasks: list[Task]) -> int:
        n = 0
        for t in tasks:
            if t.state == "queued":
                self.store.set_state(t, "cancelled")  # the worker skips it
                n += 1
            elif t.state == "processing" and t.id in self._running:
                self._running[t.id].cancel()
                n += 1
        return n

    # work ------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            tid = await self.queue.get()
            ENHANCE_QUEUE_DEPTH.set(self.queue.qsize())
            t = self.store.tasks.get(tid)
            if t is None or t.state != "queued":
                continue
            self.store.set_state(t, "processing")
            job = asyncio.create_task(self._process(t))
            self._running[t.id] = job
            try:
                await job
            except asyncio.CancelledError:
                if self._stopping:  # the worker itself is being stopped
                    raise
                self.store.set_state(t, "cancelled")
            except Exception as e:  # noqa: BLE001 - one photo failing never stops the worker
                code = getattr(e, "code", "enhance_failed")
                message = getattr(e, "message", str(e))[:300]
                log.warning("enhancement of %s failed: %s", t.id, message)
                self.store.set_state(t, "failed", error={"code": code, "message": message})
            finally:
                self._running.pop(t.id, None)

    async def _process(self, t: Task) -> None:
        data = await asyncio.to_thread(t.input_path.read_bytes)
        t0 = time.perf_counter()
        r = await self.triton.enhance(data, t.options, self.timeout_s)
        dt = time.perf_counter() - t0
        path = t.input_path.with_name(f"{t.id}.out.{'png' if r.is_png else 'jpg'}")
        tmp = path.with_suffix(".partial")
        await asyncio.to_thread(tmp.write_bytes, r.image)
        os.replace(tmp, path)  # a result file is whole or absent
        faces, info = r.faces, r.info
        ENHANCE_DURATION.observe(dt)
        ENHANCE_FACES.inc(faces)
        self.completed_total += 1
        self.faces_total += faces
        self._recent.append((time.time(), dt, faces))
        self.store.set_state(t, "completed", result_path=path, faces=faces, info=info)

    # results ---------------------------------------------------------------------------
    def download_name(self, t: Task) -> str:
        ext = t.result_path.suffix if t.result_path else ".jpg"
        return f"enhanced_{t.index:02d}_{safe_name(t.filename, t.index)}{ext}"

    async def zip_stream(self, batch: Batch) -> Iterator[bytes]:
        """Completed results plus a manifest (every item's state, faces, error) as a ZIP
        produced while it is sent: stored, not deflated (JPEG/PNG are compressed already),
        sizes in data descriptors since nothing is seekable. The tasks are taken and their
        result files opened (off the loop) before the answer starts, so a clean-up that runs
        while it is sent cannot empty or cut the archive; the returned generator is sync, so
        Starlette runs it (and its file reads) in a worker thread."""
        tasks = list(self.store.batch_tasks(batch))
        opened = await asyncio.to_thread(lambda: [(t, _open_result(t)) for t in tasks])
        return self._zip(batch.id, opened)

    def _zip(self, batch_id: str, opened: list[tuple[Task, BinaryIO | None]]) -> Iterator[bytes]:
        sink = _Sink()
        manifest = []
        try:
            with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:  # type: ignore[call-overload]  # any writable
                for t, src in opened:
                    entry = {"index": t.index, "filename": t.filename, "state": t.state, "faces": t.faces,
                             "error": t.error}
                    if src is not None:
                        entry["file"] = self.download_name(t)
                        with z.open(entry["file"], "w") as dst:
                            while chunk := src.read(COPY_CHUNK):
                                dst.write(chunk)
                                yield from sink.drain()
                    elif t.state == "completed":
                        entry["error"] = {"code": "result_expired", "message": "the result file is gone"}
                    manifest.append(entry)
                    yield from sink.drain()
                z.writestr("manifest.json", json.dumps({"batch_id": batch_id, "items": manifest}, indent=2))
            yield from sink.drain()
        finally:  # also when the client goes away mid-download
            for _, src in opened:
                if src is not None:
                    src.close()

    # housekeeping and numbers ----------------------------------------------------------
    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_every_s)
            self.cleanup()

    def cleanup(self, now: float | None = None) -> int:
        gone = self.store.expired(self.ttl_s, now)
        for b in gone:
            shutil.rmtree(b.directory, ignore_errors=True)
        return len(gone)

    def performance(self) -> dict:
        now = time.time()
        recent = list(self._recent)
        last_min = [r for r in recent if now - r[0] <= 60]
        lat = np.array([r[1] for r in recent]) if recent else np.zeros(0)
        disk = sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file()) if self.dir.exists() else 0
        mem = psutil.Process().memory_info().rss
        return {
            "model": ENHANCE_MODEL,
            "concurrency": self.concurrency,
            "queue_depth": self.queue.qsize(),
            "processing": len(self._running),
            "tasks": self.store.counts(),
            "completed_total": self.completed_total,
            "faces_total": self.faces_total,
            "throughput_per_min": len(last_min),
            "throughput_images_per_s": round(len(last_min) / 60, 3),
            "latency_ms": {k: (round(float(np.percentile(lat, q)) * 1000, 1) if lat.size else None)
                           for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}
                          | {"max": round(float(lat.max()) * 1000, 1) if lat.size else None,
                             "samples": int(lat.size)},
            "memory": {"rss_bytes": mem, "results_on_disk_bytes": disk},
            "result_ttl_s": self.ttl_s,
            "uptime_s": round(now - self.started_at, 1),
        }

    def finished(self, batch: Batch) -> bool:
        return all(t.state in TERMINAL for t in self.store.batch_tasks(batch))

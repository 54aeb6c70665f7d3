"""In-memory state of enhancement tasks and batches: item states, progress, subscribers for
the progress stream, expiry. Files live on disk (``gateway/services/enhance.py``); this
holds only small records, so memory stays flat however large the photos are.

State lives in the gateway process that accepted the upload: run the enhancement API on one
worker per machine (or with sticky routing); large archives go to the batch engine instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.metrics import ENHANCE_TASKS

STATES = ("queued", "processing", "completed", "failed", "cancelled")
TERMINAL = {"completed", "failed", "cancelled"}
PROGRESS = {"queued": 0.0, "processing": 0.5}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Task:
    id: str
    filename: str
    input_path: Path
    options: dict
    batch_id: str | None = None
    index: int = 0
    state: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result_path: Path | None = None
    faces: int | None = None
    info: dict | None = None
    error: dict | None = None

    @property
    def progress(self) -> float:
        return PROGRESS.get(self.state, 1.0)

    def public(self) -> dict:
        d = {"task_id": self.id, "batch_id": self.batch_id, "index": self.index, "filename": self.filename,
             "state": self.state, "progress": self.progress, "options": self.options,
             "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
             "faces": self.faces, "info": self.info, "error": self.error}
        if self.state == "completed":
            d["download_url"] = f"/api/v1/download/{self.id}"
        if self.finished_at and self.started_at:
            d["duration_ms"] = round((self.finished_at - self.started_at) * 1000, 1)
        return d


@dataclass
class Batch:
    id: str
    task_ids: list[str]
    directory: Path
    created_at: float = field(default_factory=time.time)


class TaskStore:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.batches: dict[str, Batch] = {}
        self._subscribers: dict[str, set[asyncio.Queue]] = {}
        self._counts: Counter = Counter()
        for s in STATES:
            ENHANCE_TASKS.labels(s).set(0)

    def add(self, batch: Batch, tasks: list[Task]) -> None:
        self.batches[batch.id] = batch
        for t in tasks:
            self.tasks[t.id] = t
            self._count(None, t.state)

    def set_state(self, task: Task, state: str, **fields) -> None:
        old = task.state
        task.state = state
        for k, v in fields.items():
            setattr(task, k, v)
        if state == "processing":
            task.started_at = time.time()
        if state in TERMINAL:
            task.finished_at = time.time()
        self._count(old, state)
        self._publish(task)

    def _count(self, old: str | None, new: str | None) -> None:
        for s, d in ((old, -1), (new, 1)):
            if s:
                self._counts[s] += d
                ENHANCE_TASKS.labels(s).set(self._counts[s])

    def counts(self) -> dict[str, int]:
        return {s: self._counts[s] for s in STATES}

    def batch_tasks(self, batch: Batch) -> list[Task]:
        return [self.tasks[i] for i in batch.task_ids if i in self.tasks]

    def batch_status(self, batch: Batch) -> dict:
        tasks = self.batch_tasks(batch)
        c = Counter(t.state for t in tasks)
        done = sum(c[s] for s in TERMINAL)
        state = ("completed" if c["completed"] == len(tasks) else "finished") if done == len(tasks) else \
            ("processing" if c["processing"] or done else "queued")
        return {"batch_id": batch.id, "state": state, "total": len(tasks),
                **{s: c[s] for s in STATES},
                "progress": round(sum(t.progress for t in tasks) / max(1, len(tasks)), 3),
                "created_at": batch.created_at, "download_url": f"/api/v1/batch/{batch.id}/download",
                "items": [t.public() for t in tasks]}

    # progress stream: one queue per listener, fed on every state change of the batch
    def subscribe(self, batch_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._subscribers.setdefault(batch_id, set()).add(q)
        return q

    def unsubscribe(self, batch_id: str, q: asyncio.Queue) -> None:
        subs = self._subscribers.get(batch_id)
        if subs:
            subs.discard(q)
            if not subs:
                del self._subscribers[batch_id]

    def _publish(self, task: Task) -> None:
        for q in self._subscribers.get(task.batch_id or "", ()):
            if not q.full():  # a stalled listener loses events, never blocks the workers
                q.put_nowait(task.public())

    def expired(self, ttl_s: float, now: float | None = None) -> list[Batch]:
        """Batches whose every task ended more than ``ttl_s`` ago; removed from the store."""
        now = now or time.time()
        gone = []
        for b in list(self.batches.values()):
            tasks = self.batch_tasks(b)
            if all(t.state in TERMINAL and (t.finished_at or 0) + ttl_s < now for t in tasks):
                for t in tasks:
                    self._count(t.state, None)
                    del self.tasks[t.id]
                del self.batches[b.id]
                gone.append(b)
        return gone

"""The durable local outbox between an answered inspection and the database.

The verdict never waits on MySQL: the gateway writes the inspection into a local SQLite
file (WAL, ``synchronous=FULL``: on disk when ``put`` returns) *before* it answers, then a
drainer moves rows to the database in batches and deletes them only after the database
transaction committed. Database writes are idempotent (primary key = inspection id), so a
crash between commit and delete re-sends a row without storing it twice. The file survives
a database outage and a gateway restart; any worker can drain it.

The same file keeps the idempotency keys (device, Idempotency-Key) -> the request's
fingerprint and first response, so a retried submission is answered from here even while
the database and Redis are down (``gateway/services/idempotency.py`` shares them between
replicas through Redis).

A storage failure (disk full, the file locked past its busy timeout, a corrupt file) raises
``StorageError``: the caller refuses the request (503) instead of answering without a record.

Draining: each drainer *leases* the rows it hands to the database (``lease_until``), so two
workers (or pods) sharing one outbox file never write the same row at once. A batch the
database refuses because of a row (an integrity or data error, as told by ``rejected``) is
retried row by row: the good rows go through, the bad one gets an attempt counted, and
after ``max_attempts`` it moves to the ``quarantine`` table: kept (never deleted), counted
in a metric and an alert, listed and sent back by an admin (route and CLI). A database that
is simply unavailable counts no attempts: those rows wait.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_cache (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    fingerprint TEXT,
    PRIMARY KEY (device_id, key)
);
"""


class StorageError(Exception):
    """The local outbox cannot store now (disk full, locked, unreadable)."""


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str | None  # None: written before fingerprints existed (matches anything)
    response: dict


@dataclass(eq=False)
class _Put:
    """One ``put`` waiting for its group's commit."""
    args: tuple
    result: IdempotencyRecord | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class PendingRow:
    id: str
    kind: str
    payload: dict
    attempts: int


class Outbox:
    def __init__(self, path: str | Path, busy_timeout_s: float = 2.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a locked file must cost a bounded wait on the request path, then a 503
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._queue: list[_Put] = []  # group commit (``put``)
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        with self._conn() as c:
            c.executescript(SCHEMA)
            cols = {r[1] for r in c.execute("PRAGMA table_info(idempotency)")}
            if "fingerprint" not in cols:  # a file from before fingerprints
                c.execute("ALTER TABLE idempotency ADD COLUMN fingerprint TEXT")
            if "lease_until" not in {r[1] for r in c.execute("PRAGMA table_info(pending)")}:
                c.execute("ALTER TABLE pending ADD COLUMN lease_until REAL NOT NULL DEFAULT 0")

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            self._local.conn = c
        return c

    # ---- write side (request path) -----------------------------------------------------
    def put(self, row_id: str, kind: str, payload: dict,
            idempotency: tuple[str, str, str, dict] | None = None) -> IdempotencyRecord | None:
        """Store one row (and its idempotency record: scope, key, fingerprint, response) so
        that it is on disk when this returns. If the key was already used, store nothing and
        return the first record. Raises ``StorageError`` when the file cannot take it.

        Group commit: puts that arrive while another one is committing wait for it, then
        the next of them commits all that queued meanwhile in one transaction, one fsync
        (``synchronous=FULL`` kept). One request alone pays one fsync, as before; under
        concurrency the fsyncs per request fall instead of queueing one behind another."""
        item = _Put((row_id, kind, payload, idempotency))
        with self._queue_lock:
            self._queue.append(item)
        # one committer at a time; the others gather behind it. The wait is bounded like the
        # file's own lock: the line's answer may wait at most about one busy timeout
        if not self._commit_lock.acquire(timeout=self.busy_timeout_s):
            with self._queue_lock:
                if item in self._queue:  # still ours to withdraw: nothing of it is stored
                    self._queue.remove(item)
                    raise StorageError("outbox: busy (another commit is holding the file)")
            self._commit_lock.acquire()  # a leader took it already: its answer is coming
        try:
            if not item.done:  # not committed by the leader before us: lead this group
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        finally:
            self._commit_lock.release()
        if not item.done:  # its leader died between taking it and committing: never say stored
            raise StorageError("outbox: the commit this row waited for did not finish")
        if item.error is not None:
            if isinstance(item.error, StorageError | sqlite3.Error | OSError | ValueError | TypeError):
                raise type(item.error)(*item.error.args) from item.error  # one exception object per caller
            raise StorageError(f"outbox: {item.error!r}") from item.error
        return item.result

    def _commit_group(self, group: list[_Put]) -> None:
        try:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                for item in group:
                    # a savepoint each: a row that fails alone fails alone
                    c.execute("SAVEPOINT put")
                    try:
                        item.result = self._put(c, *item.args)
                        c.execute("RELEASE put")
                    except Exception as e:  # noqa: BLE001 - this put's own failure, handed to its caller
                        c.execute("ROLLBACK TO put")
                        c.execute("RELEASE put")
                        item.error = StorageError(f"outbox: {e}") if isinstance(e, sqlite3.Error) else e
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as e:  # "database or disk is full", "database is locked", ...
            for item in group:  # nothing of the group is stored
                item.result, item.error = None, StorageError(f"outbox: {e}")
        except BaseException as e:
            for item in group:
                item.result, item.error = None, e
            raise
        finally:
            for item in group:
                item.done = True

    def _put(self, c: sqlite3.Connection, row_id, kind, payload, idempotency) -> IdempotencyRecord | None:
        if idempotency:
            device_id, key, fp, response = idempotency
            old = self._seen(c, device_id, key)  # also sees an earlier put of this group
            if old:
                return old
            c.execute("INSERT INTO idempotency (device_id, key, response, created_at, fingerprint) "
                      "VALUES (?,?,?,?,?)", (device_id, key, json.dumps(response), time.time(), fp))
        c.execute("INSERT OR IGNORE INTO pending (id, kind, payload, created_at) VALUES (?,?,?,?)",
                  (row_id, kind, json.dumps(payload), time.time()))
        return None

    @staticmethod
    def _seen(c: sqlite3.Connection, device_id: str, key: str) -> IdempotencyRecord | None:
        row = c.execute("SELECT fingerprint, response FROM idempotency WHERE device_id=? AND key=?",
                        (device_id, key)).fetchone()
        return IdempotencyRecord(row[0], json.loads(row[1])) if row else None

    def seen(self, device_id: str, key: str) -> IdempotencyRecord | None:
        try:
            return self._seen(self._conn(), device_id, key)
        except sqlite3.Error as e:
            raise StorageError(f"outbox: {e}") from e

    # ---- drain side ----------------------------------------------------------------------
    def depth(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def pending(self, row_id: str) -> dict | None:
        """A row not yet in the database (just answered, or the database is down)."""
        row = self._conn().execute("SELECT payload FROM pending WHERE id = ?", (row_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def peek(self, limit: int = 100) -> list[PendingRow]:
        rows = self._conn().execute(
            "SELECT id, kind, payload, attempts FROM pending ORDER BY created_at, id LIMIT ?", (limit,)).fetchall()
        return [PendingRow(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def _claim(self, limit: int, lease_s: float) -> list[PendingRow]:
        """The oldest rows no other drainer holds, leased to this one."""
        c = self._conn()
        now = time.time()
        c.execute("BEGIN IMMEDIATE")
        try:
            rows = c.execute("SELECT id, kind, payload, attempts FROM pending WHERE lease_until < ? "
                             "ORDER BY created_at, id LIMIT ?", (now, limit)).fetchall()
            c.executemany("UPDATE pending SET lease_until = ? WHERE id = ?", [(now + lease_s, r[0]) for r in rows])
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return [PendingRow(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def _settle(self, done: list[PendingRow], release: Sequence[PendingRow] = (), error: str | None = None) -> None:
        """Delete what the database took; hand the rest back (lease ended)."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        c.executemany("DELETE FROM pending WHERE id = ?", [(r.id,) for r in done])
        c.executemany("UPDATE pending SET lease_until = 0, last_error = coalesce(?, last_error) WHERE id = ?",
                      [(error, r.id) for r in release])
        c.execute("COMMIT")

    def _reject(self, row: PendingRow, error: Exception, max_attempts: int) -> bool:
        """Count a refusal of ``row``; quarantine it at ``max_attempts``. True if quarantined."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE pending SET attempts = attempts + 1, last_error = ?, lease_until = 0 WHERE id = ?",
                  (repr(error)[:500], row.id))
        moved = c.execute("INSERT INTO quarantine SELECT id, kind, payload, attempts, last_error, created_at, ? "
                          "FROM pending WHERE id = ? AND attempts >= ?", (time.time(), row.id, max_attempts)).rowcount
        if moved:
            c.execute("DELETE FROM pending WHERE id = ?", (row.id,))
        c.execute("COMMIT")
        return bool(moved)

    def drain_once(self, write: Callable[[list[PendingRow]], None], limit: int = 100, *,
                   rejected: Callable[[Exception], bool] | None = None, max_attempts: int = 5,
                   lease_s: float = 60.0, on_quarantine: Callable[[PendingRow, Exception], None] | None = None) -> int:
        """Hand the oldest unleased rows to ``write`` (one database transaction); delete them
        only if it returned. Returns how many were moved. If ``write`` fails and ``rejected``
        says the failure is a row's fault, the rows are tried one by one (see the module
        docstring); any other failure is raised with the rows handed back untouched."""
        rows = self._claim(limit, lease_s)
        if not rows:
            return 0
        try:
            write(rows)
        except Exception as e:
            if rejected is None or not rejected(e):
                self._settle([], rows, repr(e)[:500])
                raise
            return self._one_by_one(rows, write, rejected, max_attempts, on_quarantine)
        self._settle(rows)
        return len(rows)

    def _one_by_one(self, rows, write, rejected, max_attempts, on_quarantine) -> int:
        moved = 0
        for i, row in enumerate(rows):
            try:
                write([row])
            except Exception as e:
                if not rejected(e):  # the database went away meanwhile: hand back the rest
                    self._settle([], rows[i:], repr(e)[:500])
                    raise
                if self._reject(row, e, max_attempts) and on_quarantine is not None:
                    on_quarantine(row, e)
                continue
            self._settle([row])
            moved += 1
        return moved

    # ---- the device registry's last good snapshot (a start without the database) --------
    def save_devices(self, records: list[dict]) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        c.execute("DELETE FROM device_cache")
        c.executemany("INSERT INTO device_cache VALUES (?, ?)", [(r["id"], json.dumps(r)) for r in records])
        c.execute("COMMIT")

    def load_devices(self) -> list[dict]:
        return [json.loads(r[0]) for r in self._conn().execute("SELECT record FROM device_cache")]

    # ---- quarantine (rows the database kept refusing) ----------------------------------
    def quarantine_depth(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])

    def quarantined(self, limit: int = 100) -> list[dict]:
        rows = self._conn().execute("SELECT id, kind, payload, attempts, last_error, created_at, quarantined_at "
                                    "FROM quarantine ORDER BY quarantined_at LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "kind": r[1], "payload": json.loads(r[2]), "attempts": r[3], "last_error": r[4],
                 "created_at": r[5], "quarantined_at": r[6]} for r in rows]

    def requeue(self, ids: list[str] | None = None) -> int:
        """Send quarantined rows (all, or ``ids``) back to the outbox with a fresh count."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        where, args = ("", ()) if ids is None else (f"WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
        n = c.execute("INSERT OR IGNORE INTO pending (id, kind, payload, attempts, last_error, created_at, "
                      f"lease_until) SELECT id, kind, payload, 0, last_error, created_at, 0 FROM quarantine {where}",
                      args).rowcount
        c.execute(f"DELETE FROM quarantine {where}", args)
        c.execute("COMMIT")
        return n

    def prune_idempotency(self, older_than_s: float) -> int:
        cur = self._conn().execute("DELETE FROM idempotency WHERE created_at < ?", (time.time() - older_than_s,))
        return cur.rowcount

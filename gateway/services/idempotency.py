"""Idempotency records: ``(scope, Idempotency-Key)`` -> the request's fingerprint and its
first answer, shared by every gateway replica.

Rules (the same for inspections and batch jobs):

- the same key with the same content (same fingerprint: route, board, side, image digest)
  gets the first answer, from whichever replica answered it;
- the same key with different content is ``409 idempotency_conflict`` and stores nothing
  (an edge restarted into old board ids, a client bug: never answer a new image with an
  old board's verdict);
- while the first request with a key is still running, a duplicate waits for its answer
  (bounded), then gets ``503 idempotency_in_progress`` with Retry-After;
- a request that fails releases its key, so the retry runs (and finds its board's
  decision, pulse included, in the pair store).

Where the records live: the local outbox file (durable, written in the same transaction as
the inspection row, answers retries even with Redis and the database down) and, when Redis
is configured, a Redis key per record with a TTL (``IDEMPOTENCY_TTL_S``) so a retry that
lands on another replica is answered too. Fallback while Redis is down: per replica (a
retry that reaches the same replica is answered, one that reaches another replica within
the outage is inspected again and recorded as a second row; the board's pulse is still
decided once per replica's pair store). Keys are scoped: an inspection key by the device,
a batch job key by its submitter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass

from gateway.core.errors import ApiError, ServiceUnavailable
from gateway.services.outbox import Outbox, StorageError
from gateway.services.pair_store import is_redis_failure

log = logging.getLogger("gateway.idempotency")


class IdempotencyConflict(ApiError):
    status = 409
    code = "idempotency_conflict"


def fingerprint(route: str, *parts: str | bytes | None) -> str:
    """A digest of what makes a request *this* request (bytes are hashed, so an image's
    digest stands for it)."""
    h = hashlib.sha256(route.encode())
    for part in parts:
        data = part if isinstance(part, bytes) else ("" if part is None else str(part)).encode()
        h.update(b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@dataclass
class _Running:
    fingerprint: str
    done: asyncio.Event


# set the record only if it is still the running one we wrote (a compare-and-delete)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Idempotency:
    def __init__(self, outbox: Outbox, shared=None, ttl_s: float = 3600, running_ttl_s: float = 15,
                 wait_s: float = 10, prefix: str = "pcb:"):
        # shared: the pair store's Redis side (``FallbackPairStore``): its client, whether it
        # is known to be down (then no call pays a timeout), and where to report a failure
        self.outbox, self.shared = outbox, shared
        self.ttl_s, self.running_ttl_s, self.wait_s = ttl_s, running_ttl_s, wait_s
        self.prefix = prefix
        self._running: dict[tuple[str, str], _Running] = {}
        self._tokens: dict[tuple[str, str], str] = {}

    @property
    def redis(self):
        if self.shared is None or self.shared.degraded:
            return None
        return self.shared.redis

    def _failed(self, e: BaseException, what: str) -> None:
        """The shared record failed: this replica's own records answer. Redis failing marks
        it down; anything else (a client left in a bad state by a cut, a record that does
        not parse) is logged with its traceback - never a 500 for the edge."""
        if not is_redis_failure(e):
            log.error("idempotency %s: unexpected error from the shared record; this replica's records only",
                      what, exc_info=e)
            return
        log.warning("idempotency %s: Redis unavailable (%r), this replica's records only", what, e)
        if self.shared is not None:
            self.shared.report_failure(e, f"idempotency {what}")

    def _key(self, scope: str, key: str) -> str:
        return f"{self.prefix}idem:{scope}:{key}"

    @staticmethod
    def _check(scope: str, key: str, stored_fp: str | None, fp: str) -> None:
        if stored_fp is not None and stored_fp != fp:
            raise IdempotencyConflict(f"Idempotency-Key {key!r} of {scope} was used for another request "
                                      "(different image, board, side or route); nothing was stored")

    async def begin(self, scope: str, key: str | None, fp: str) -> dict | None:
        """``None``: go ahead (the key is held until ``finish`` or ``release``). A dict: the
        first answer, to be returned as is."""
        if not key:
            return None
        deadline = time.monotonic() + self.wait_s
        k = (scope, key)
        while (mine := self._running.get(k)) is not None:  # a duplicate in this process
            self._check(scope, key, mine.fingerprint, fp)
            try:
                await asyncio.wait_for(mine.done.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise self._busy(key) from None
        # held from here, before any await: a duplicate arriving meanwhile waits above
        self._running[k] = _Running(fp, asyncio.Event())
        answer: dict | None
        try:
            local = await asyncio.to_thread(self.outbox.seen, scope, key)
            if local is not None:
                self._check(scope, key, local.fingerprint, fp)
                answer = local.response
            else:
                answer = await self._begin_shared(scope, key, fp, deadline)
        except StorageError as e:
            self._end(k)
            raise ServiceUnavailable(f"cannot read idempotency records: {e}", "storage_unavailable", 2) from e
        except BaseException:
            self._end(k)
            raise
        if answer is not None:
            self._end(k)
        return answer

    async def _begin_shared(self, scope: str, key: str, fp: str, deadline: float) -> dict | None:
        redis = self.redis
        if redis is None:
            return None
        rkey, token = self._key(scope, key), secrets.token_hex(8)
        running = json.dumps({"fp": fp, "state": "running", "token": token})
        try:
            while True:
                if await redis.set(rkey, running, nx=True, px=int(self.running_ttl_s * 1000)):
                    self._tokens[(scope, key)] = running
                    return None
                raw = await redis.get(rkey)
                if raw is None:
                    continue  # released a moment ago: try to take it
                rec = json.loads(raw)
                self._check(scope, key, rec.get("fp"), fp)
                if rec.get("state") == "done":
                    return rec["answer"]
                if time.monotonic() >= deadline:  # another replica is still on it
                    raise self._busy(key)
                await asyncio.sleep(0.05)
        except ApiError:  # 409 another request's key, 503 still running: answers, not failures
            raise
        except Exception as e:  # Redis away: the local record is the fallback
            self._failed(e, "check")
            return None

    @staticmethod
    def _busy(key: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"a request with Idempotency-Key {key!r} is still running; retry shortly",
                                  "idempotency_in_progress", 1)

    def _end(self, k: tuple[str, str]) -> None:
        run = self._running.pop(k, None)
        if run is not None:
            run.done.set()

    async def finish(self, scope: str, key: str | None, fp: str, answer: dict) -> None:
        """The answer is recorded (the caller stored it locally with its row): share it."""
        if not key:
            return
        k = (scope, key)
        self._tokens.pop(k, None)
        try:
            if (redis := self.redis) is not None:
                rec = json.dumps({"fp": fp, "state": "done", "answer": answer})
                await redis.set(self._key(scope, key), rec, px=int(self.ttl_s * 1000))
        except Exception as e:  # the local record still answers retries here
            self._failed(e, "record")
        finally:
            self._end(k)

    async def release(self, scope: str, key: str | None) -> None:
        """The request failed: let its retry run."""
        if not key:
            return
        k = (scope, key)
        running = self._tokens.pop(k, None)
        try:
            if (redis := self.redis) is not None and running is not None:
                await redis.eval(_RELEASE, 1, self._key(scope, key), running)
        except Exception as e:  # it expires by itself (running_ttl_s)
            self._failed(e, "release")
        finally:
            self._end(k)

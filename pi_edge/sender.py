"""Sending frames to the gateway: bounded, latest-frame-wins, retried, spooled.

- At most ``in_flight_limit(cfg)`` requests are on the wire: ``max_in_flight`` when set,
  else as many frames as the capture rate brings within one latency budget (300 ms: 3 at
  10 fps, 11 at 35 fps). A frame that arrives while they are all busy waits in a one-slot
  mailbox; a newer frame replaces it (the older one is *skipped* and counted): when the
  gateway lags past the budget, the edge keeps inspecting the present instead of queueing
  the past, and while it keeps within the budget no frame is skipped. So a frame is either
  sent within one request time of its capture or skipped, and the end-to-end latency stays
  bounded by ``2 x (timeout_s + retry backoff)`` whatever the gateway does.
- Each frame carries an ``Idempotency-Key`` (device, board, side): a retry after a lost
  answer is answered from the gateway's first result and stored once.
- Transient failures (connection refused, timeout, 408, 429, any 5xx) are retried with
  exponential backoff and full jitter, up to ``retries`` times; then the frame goes to the
  on-disk spool. Definite refusals (other 4xx, e.g. 409 ``idempotency_conflict``) are
  logged and dropped: resending cannot help.
- While the gateway is unreachable every frame goes straight to the spool (no skipping:
  these are boards already captured). When a heartbeat gets through again, the spool is
  replayed oldest first with the same idempotency keys, marked ``replay``: the gateway
  records them (no pairing, no pulse: those boards are long past the sorter). Replays use
  a lane of their own (one at a time, at most ``replay_rate_per_s``), never the live
  frames' slots, so a long replay never makes the live line skip a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from pi_edge.config import EdgeConfig, in_flight_limit
from pi_edge.spool import Spool

log = logging.getLogger("pi_edge.sender")

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_transport(cfg: EdgeConfig) -> None:
    """The device key goes over HTTPS, or over plain HTTP only to this machine or when the
    configuration says so explicitly (``allow_plain_http``)."""
    url = httpx.URL(cfg.gateway_url)
    if url.scheme == "http" and url.host not in LOOPBACK and not cfg.allow_plain_http:
        raise ValueError(f"refusing to send the device key over plain HTTP to {url.host}: use https:// "
                         "(with ca_file for the plant's CA) or set allow_plain_http: true")


def tls_context(cfg: EdgeConfig) -> ssl.SSLContext | bool:
    """Verify the gateway against the configured CA file (else the system's store)."""
    return ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else True


def retryable(status: int) -> bool:
    """Worth sending again: the gateway or something before it was busy or failing."""
    return status in (408, 429) or status >= 500


@dataclass
class Frame:
    jpeg: bytes
    board_id: str
    captured_at: float
    idempotency_key: str = ""


@dataclass
class SenderStats:
    sent: int = 0
    answered: int = 0
    skipped: int = 0
    spooled: int = 0
    replayed: int = 0
    refused: int = 0
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class GatewayDown(Exception):
    """Retries exhausted. ``status`` is the last HTTP status, None when nothing answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        """The gateway cannot take frames now (down, overloaded, storage away): spool the
        next ones too. Any other 5xx is about this frame, not the gateway."""
        return self.status is None or self.status in (502, 503, 504)


def _code(r: httpx.Response) -> str | None:
    try:
        return r.json().get("code")
    except ValueError:
        return None


# a spooled frame the gateway keeps failing (a 5xx that is not an outage) is set aside after
# this many replays, so one bad entry never blocks the spool behind it
MAX_REPLAY_FAILURES = 3


class Sender:
    def __init__(self, cfg: EdgeConfig, spool: Spool, on_result: Callable[[Frame, dict], None] | None = None,
                 client: httpx.AsyncClient | None = None):
        self.cfg, self.spool, self.on_result = cfg, spool, on_result
        check_transport(cfg)
        self.client = client or httpx.AsyncClient(base_url=cfg.gateway_url, timeout=cfg.timeout_s,
                                                  verify=tls_context(cfg))
        self.stats = SenderStats()
        self.online = True
        self.in_flight_limit = in_flight_limit(cfg)
        self._slots = asyncio.Semaphore(self.in_flight_limit)
        self._mailbox: Frame | None = None
        self._mail = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self._replay_failures: dict[int, int] = {}

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Device-Id": self.cfg.device_id, "X-API-Key": self.cfg.api_key}

    # ---- intake ------------------------------------------------------------------------
    def submit(self, frame: Frame) -> None:
        """Hand over a captured frame; never blocks the capture loop."""
        frame.idempotency_key = frame.idempotency_key or f"{self.cfg.device_id}:{frame.board_id}:{self.cfg.side}"
        if not self.online:
            self._spool(frame)
            return
        if self._mailbox is not None:
            self.stats.skipped += 1  # latest frame wins
        self._mailbox = frame
        self._mail.set()

    def _spool(self, frame: Frame) -> None:
        self.spool.put(frame.jpeg, {"board_id": frame.board_id, "captured_at": frame.captured_at,
                                    "idempotency_key": frame.idempotency_key})
        self.stats.spooled += 1

    # ---- sending -----------------------------------------------------------------------
    async def line_session(self, attempts: int = 3) -> str | None:
        """The session for this start's board ids, from the gateway (None if unreachable).
        One ``start_id`` for all attempts: a retry after a lost answer gets the same session."""
        start_id = secrets.token_hex(8)
        for i in range(attempts):
            try:
                r = await self.client.post("/v1/line-session", headers=self.headers,
                                           json={"line_id": self.cfg.line_id, "start_id": start_id},
                                           timeout=min(2.0, self.cfg.timeout_s))
                if r.status_code == 200:
                    return r.json()["session"]
                if not retryable(r.status_code):
                    log.error("gateway refused a line session: %s %s", r.status_code, r.text[:200])
                    return None
            except (httpx.TransportError, httpx.TimeoutException, ValueError, KeyError):
                pass
            await asyncio.sleep(min(1.0, self.cfg.backoff_base_s * 2 ** i))
        return None

    async def _post(self, frame: Frame, replay: bool = False) -> dict:
        data = {"board_id": frame.board_id, "side": self.cfg.side, "captured_at": str(frame.captured_at)}
        if replay:
            data["replay"] = "true"
        files = {"image": (f"{frame.board_id}.jpg", frame.jpeg, "image/jpeg")}
        attempt = 0
        while True:
            status = None
            try:
                r = await self.client.post("/v1/inspect", headers={**self.headers,
                                                                   "Idempotency-Key": frame.idempotency_key},
                                           data=data, files=files)
                if r.status_code == 200:
                    return r.json()
                if r.status_code == 422 and "captured_at" in data and _code(r) == "invalid_captured_at":
                    # this Pi's clock is off: the board still needs its verdict, so send it
                    # without the time (the edge judges the age on its own clock anyway)
                    log.error("gateway refused captured_at %s: is this Pi's clock set? sending without it",
                              data.pop("captured_at"))
                    continue
                if not retryable(r.status_code):
                    raise ValueError(f"gateway refused the frame: {r.status_code} {r.text[:200]}")
                retry_after = float(r.headers.get("Retry-After", 0) or 0)
                status = r.status_code
                last: Exception = RuntimeError(f"{r.status_code} {r.text[:200]}")
            except (httpx.TransportError, httpx.TimeoutException) as e:
                retry_after = 0.0
                last = e
            attempt += 1
            if attempt > self.cfg.retries:
                raise GatewayDown(repr(last), status)
            self.stats.retries += 1
            cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(max(retry_after, random.uniform(0, cap)))  # full jitter

    async def _send(self, frame: Frame, replay_seq: int | None = None) -> bool:
        try:
            self.stats.sent += 1
            result = await self._post(frame, replay=replay_seq is not None)
        except GatewayDown as e:
            if replay_seq is None:
                log.warning("gateway did not take the frame (%s): spooling", e)
                self._spool(frame)
            elif not e.unreachable:
                failures = self._replay_failures[replay_seq] = self._replay_failures.get(replay_seq, 0) + 1
                if failures >= MAX_REPLAY_FAILURES:
                    log.error("spooled board %s failed %d replays (%s): set aside in the spool's dead/ folder",
                              frame.board_id, failures, e)
                    self.spool.set_aside(replay_seq)
                    return True
            if e.unreachable:
                self.online = False
            return False
        except ValueError as e:
            self.stats.refused += 1
            log.error("%s (board %s)", e, frame.board_id)
            if replay_seq is not None:
                self.spool.done(replay_seq)  # resending cannot help
            return True
        if replay_seq is not None:
            self.spool.done(replay_seq)
            self.stats.replayed += 1
            return True  # a record: not a live answer, never a pulse
        self.stats.answered += 1
        self.stats.latencies_ms.append((time.time() - frame.captured_at) * 1000)
        if self.on_result:
            self.on_result(frame, result)
        return True

    async def _dispatch(self) -> None:
        while not self._closing:
            await self._mail.wait()
            self._mail.clear()
            while self._mailbox is not None:
                await self._slots.acquire()
                frame, self._mailbox = self._mailbox, None
                if frame is None:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._send_released(frame))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send_released(self, frame: Frame) -> None:
        try:
            await self._send(frame)
        finally:
            self._slots.release()

    # ---- reconnect, replay, heartbeat ---------------------------------------------------
    async def heartbeat_once(self) -> bool:
        try:
            r = await self.client.post("/v1/heartbeat", headers=self.headers, timeout=min(2.0, self.cfg.timeout_s))
            return r.status_code == 200
        except (httpx.TransportError, httpx.TimeoutException):
            return False

    async def replay(self) -> int:
        """Send spooled frames oldest first, on the replay lane (one at a time, at most
        ``replay_rate_per_s``; never a live slot); stop at the first failure."""
        n = 0
        period = 1.0 / self.cfg.replay_rate_per_s if self.cfg.replay_rate_per_s > 0 else 0.0
        while not self._closing:
            entries = self.spool.oldest(1)
            if not entries:
                return n
            e = entries[0]
            t0 = time.monotonic()
            try:
                frame = Frame(e.image.read_bytes(), e.meta["board_id"], e.meta["captured_at"],
                              e.meta["idempotency_key"])
            except (OSError, KeyError):  # a damaged entry: drop it rather than stall the spool
                self.spool.done(e.seq)
                continue
            ok = await self._send(frame, replay_seq=e.seq)
            if not ok:
                return n
            n += 1
            await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
        return n

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            alive = await self.heartbeat_once()
            if alive and (not self.online or len(self.spool)):
                self.online = True
                replayed = await self.replay()
                if replayed:
                    log.info("gateway back: replayed %d spooled frames", replayed)
            elif not alive:
                self.online = False
            await asyncio.sleep(self.cfg.heartbeat_s if self.online else min(1.0, self.cfg.heartbeat_s))

    async def run(self) -> None:
        await asyncio.gather(self._dispatch(), self._heartbeat_loop())

    async def drain(self, timeout_s: float = 30) -> None:
        """Wait until nothing is waiting or in flight (for tests and clean shutdowns)."""
        deadline = time.monotonic() + timeout_s
        while (self._mailbox is not None or self._tasks or len(self.spool)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._closing = True
        self._mail.set()
        for t in list(self._tasks):
            with contextlib.suppress(Exception):
                await t
        await self.client.aclose()

"""The gateway's Triton client: the inference contract's async transport
(``inference.aio``) with the gateway's metrics, and the contract's errors as the gateway's
answers: a refused input -> 422 with the model's code, a full queue or a dead server -> 503
with Retry-After.

The line's boards are bounded here, per gateway process: at most ``max_in_flight`` images in
Triton at once (a dual board counts two), the next board refused at once as
``inference_overloaded``. Triton's own queue bound
(``max_queue_size``) would do it server-wide, but any queue policy switches off Triton's
prefetching and costs the line its tail (export/detector_config.py); a model configured
with one still has its rejections answered the same way."""

from __future__ import annotations

import time

from gateway.core.errors import ApiError, InvalidImage, ServiceUnavailable
from gateway.core.metrics import TRITON_ERRORS, TRITON_IN_FLIGHT, TRITON_LATENCY
from inference import DUAL_MODEL, ENHANCE_MODEL, SINGLE_MODEL, BadInput, InferenceError, Overloaded
from inference.aio import AsyncTriton
from inference.results import DualResult, EnhanceResult, SideResult


def translate(e: InferenceError) -> ApiError:
    if isinstance(e, BadInput):
        return InvalidImage(e.message, e.code)
    if isinstance(e, Overloaded):
        return ServiceUnavailable(e.message, e.code, 1)
    return ServiceUnavailable(e.message, e.code, 2)


class TritonService:
    def __init__(self, url: str, timeout_s: float = 5.0, lb_policy: str | None = None, max_in_flight: int = 0):
        self.url = url
        self.transport = AsyncTriton(url, timeout_s, lb_policy)
        self.max_in_flight = max_in_flight  # line images (inspect 1, inspect_dual 2); 0: no bound
        self.in_flight = 0

    async def close(self) -> None:
        await self.transport.close()

    async def ready(self) -> bool:
        return await self.transport.ready()

    async def _call(self, model: str, call):
        t0 = time.perf_counter()
        try:
            out = await call
        except InferenceError as e:
            err = translate(e)
            TRITON_ERRORS.labels(model, err.code).inc()
            raise err from None
        TRITON_LATENCY.labels(model).observe(time.perf_counter() - t0)
        return out

    async def _line_call(self, model: str, images: int, make_call):
        """A board's call, its ``images`` counted against ``max_in_flight`` (the event loop is
        the only writer, so a plain counter is exact); ``make_call`` builds the coroutine only
        once admitted, so a refused board leaves nothing un-awaited. With nothing in flight a
        board always goes (a bound of 1 still lets a dual board through)."""
        if self.max_in_flight and self.in_flight and self.in_flight + images > self.max_in_flight:
            TRITON_ERRORS.labels(model, "inference_overloaded").inc()
            raise ServiceUnavailable(f"{self.in_flight} images already in Triton from this gateway process "
                                     f"(TRITON_MAX_IN_FLIGHT={self.max_in_flight})", "inference_overloaded", 1)
        self.in_flight += images
        TRITON_IN_FLIGHT.set(self.in_flight)
        try:
            return await self._call(model, make_call())
        finally:
            self.in_flight -= images
            TRITON_IN_FLIGHT.set(self.in_flight)

    async def inspect(self, image: bytes) -> tuple[SideResult, float]:
        return await self._line_call(SINGLE_MODEL, 1, lambda: self.transport.inspect(image))

    async def inspect_dual(self, left: bytes, right: bytes) -> DualResult:
        return await self._line_call(DUAL_MODEL, 2, lambda: self.transport.inspect_dual(left, right))

    async def enhance(self, photo: bytes, options: dict, timeout_s: float) -> EnhanceResult:
        return await self._call(ENHANCE_MODEL, self.transport.enhance(photo, options, timeout_s))

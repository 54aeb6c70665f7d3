"""The gateway's Triton client: the inference contract's async transport
(``inference.aio``) with the gateway's metrics, and the contract's errors as the gateway's
answers: a refused input -> 422 with the model's code, a full queue or a dead server -> 503
with Retry-After."""

from __future__ import annotations

import time

from gateway.core.errors import ApiError, InvalidImage, ServiceUnavailable
from gateway.core.metrics import TRITON_ERRORS, TRITON_LATENCY
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
    def __init__(self, url: str, timeout_s: float = 5.0, lb_policy: str | None = None):
        self.url = url
        self.transport = AsyncTriton(url, timeout_s, lb_policy)

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

    async def inspect(self, image: bytes) -> tuple[SideResult, float]:
        return await self._call(SINGLE_MODEL, self.transport.inspect(image))

    async def inspect_dual(self, left: bytes, right: bytes) -> DualResult:
        return await self._call(DUAL_MODEL, self.transport.inspect_dual(left, right))

    async def enhance(self, photo: bytes, options: dict, timeout_s: float) -> EnhanceResult:
        return await self._call(ENHANCE_MODEL, self.transport.enhance(photo, options, timeout_s))

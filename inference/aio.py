"""The async transport (the gateway): tritonclient's gRPC *aio* client, one channel reused by
every request (the sync clients are not safe on an event loop)."""

from __future__ import annotations

import time

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from inference import contract, results
from inference.channel import channel_args
from inference.errors import classify


class AsyncTriton:
    def __init__(self, url: str, timeout_s: float = 5.0, lb_policy: str | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(url, channel_args=channel_args(lb_policy))

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready(client_timeout=1.0))
        except InferenceServerException:
            return False

    async def infer(self, model: str, inputs: list, timeout_s: float | None = None, priority: int = 0):
        """The raw answer; a failure is raised as :class:`inference.errors.InferenceError`."""
        try:
            return await self.client.infer(model, inputs, client_timeout=timeout_s or self.timeout_s,
                                           priority=priority)
        except InferenceServerException as e:
            raise classify(e, model) from None

    async def inspect(self, image: bytes) -> tuple[results.SideResult, float]:
        t0 = time.perf_counter()
        r = await self.infer(contract.SINGLE_MODEL, contract.inspect_request(grpcclient.InferInput, image),
                             priority=contract.PRIORITY_LINE)
        return results.parsed(results.side, r), (time.perf_counter() - t0) * 1000

    async def inspect_with(self, model: str, image: bytes) -> tuple[results.SideResult, float]:
        """One side through ``model`` itself, a whole-side detector (the shadow), at the
        background priority level (a model without levels ignores it)."""
        t0 = time.perf_counter()
        r = await self.infer(model, contract.inspect_request(grpcclient.InferInput, image),
                             priority=contract.PRIORITY_BACKGROUND)
        return results.parsed(results.side, r, "", "version"), (time.perf_counter() - t0) * 1000

    async def model_version(self, model: str) -> int | None:
        """The highest ready version of ``model``, or None when it is not loaded."""
        try:
            if not await self.client.is_model_ready(model, client_timeout=1.0):
                return None
            meta = await self.client.get_model_metadata(model, client_timeout=1.0)
        except InferenceServerException:
            return None
        return max((int(v) for v in meta.versions if str(v).isdigit()), default=None)

    async def inspect_dual(self, left: bytes, right: bytes) -> results.DualResult:
        t0 = time.perf_counter()
        r = await self.infer(contract.DUAL_MODEL, contract.dual_request(grpcclient.InferInput, left, right),
                             priority=contract.PRIORITY_LINE)
        return results.parsed(results.dual, r, (time.perf_counter() - t0) * 1000)

    async def enhance(self, photo: bytes, options: dict, timeout_s: float | None = None) -> results.EnhanceResult:
        r = await self.infer(contract.ENHANCE_MODEL, contract.enhance_request(grpcclient.InferInput, photo, options),
                             timeout_s)
        return results.parsed(results.enhanced, r)

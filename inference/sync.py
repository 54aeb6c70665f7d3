"""The sync transport (batch workers, the demo, the benchmarks, the tests): one gRPC client
per thread (tritonclient's sync client is not shared across threads); ``infer_all`` puts
every request of a sub-batch in flight at once, so Triton's dynamic batcher runs them as one
batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference import contract, results
from inference.channel import channel_args
from inference.errors import InferenceError, Unavailable, classify


def _parsed(parse, answer):
    """One answer of a batch: a misfit answer becomes that request's retryable error."""
    try:
        return results.parsed(parse, answer)
    except InferenceError as e:
        return e


class SyncTriton:
    def __init__(self, url: str, timeout_s: float = 30.0, lb_policy: str | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.channel_args = channel_args(lb_policy)
        self._local = threading.local()

    def client(self) -> grpcclient.InferenceServerClient:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = grpcclient.InferenceServerClient(self.url, channel_args=self.channel_args)
        return c

    def reset(self) -> None:
        """Drop this thread's channel. After Triton was unreachable, gRPC's channel waits out
        its own reconnect backoff (up to minutes) and fails calls fast meanwhile; a fresh
        channel connects at once, so a retry really tries again."""
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass

    def model_ready(self, model: str) -> bool:
        """Whether Triton serves ``model`` now (any failure to ask is a no)."""
        try:
            return bool(self.client().is_model_ready(model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def timings(self) -> dict[str, results.ModelTiming]:
        """Every loaded model's cumulative queue and compute time (Triton's statistics, one
        call; not a restricted API). Raises :class:`InferenceError` when Triton cannot say."""
        try:
            stats = self.client().get_inference_statistics("", as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise classify(e, "statistics") from None
        return results.timings(stats)

    def request(self, build: Callable[..., list], *args) -> list:
        """A contract builder's request (``contract.inspect_request``, ...) for this transport,
        for a caller that reads the raw answer (the tests of the models' own tensors)."""
        return build(grpcclient.InferInput, *args)

    def infer_tensors(self, model: str, tensors: Mapping[str, np.ndarray], priority: int = 0):
        """Raw numpy tensors in, the raw answer out: a single model that no request builder
        covers (the enhancement's face restorer, called by ``face_enhance`` in the product)."""
        return self.infer(model, [contract.tensor_input(grpcclient.InferInput, n, a) for n, a in tensors.items()],
                          priority)

    def infer(self, model: str, inputs: list, priority: int = 0):
        """The raw answer; a failure is raised as :class:`inference.errors.InferenceError`."""
        try:
            return self.client().infer(model, inputs, client_timeout=self.timeout_s, priority=priority)
        except InferenceServerException as e:
            raise classify(e, model) from None

    def infer_all(self, model: str, requests: Sequence[list], outputs: Sequence[str], priority: int = 0) -> list:
        """All requests in flight at once; one InferResult or :class:`InferenceError` per
        request. No answer in time raises :class:`Unavailable` (and drops the channel), as
        does the channel after any retryable failure."""
        done = threading.Semaphore(0)
        answers: list = [None] * len(requests)

        def callback(i):
            def cb(result, error):
                answers[i] = classify(error, model) if error is not None else result
                done.release()
            return cb

        client = self.client()
        wanted = [grpcclient.InferRequestedOutput(o) for o in outputs]
        for i, inputs in enumerate(requests):
            try:
                client.async_infer(model, inputs, callback(i), client_timeout=self.timeout_s, outputs=wanted,
                                   priority=priority)
            except InferenceServerException as e:
                answers[i] = classify(e, model)
                done.release()
        for _ in requests:
            if not done.acquire(timeout=self.timeout_s + 5):
                self.reset()
                raise Unavailable(f"{model}: no answer in {self.timeout_s + 5:.0f} s", None, model)
        if any(isinstance(a, InferenceError) and a.retryable for a in answers):
            self.reset()
        return answers

    # typed calls --------------------------------------------------------------------------
    def inspect_many(self, images: Sequence[bytes], model: str = contract.SINGLE_MODEL
                     ) -> list[results.SideResult | InferenceError]:
        """``model``: ``pcb_inspect`` or the batch lane (same tensors)."""
        answers = self.infer_all(model,
                                 [contract.inspect_request(grpcclient.InferInput, i) for i in images],
                                 contract.SIDE_OUTPUTS, contract.PRIORITY_BACKGROUND)
        return [a if isinstance(a, InferenceError) else _parsed(results.side, a) for a in answers]

    def enhance_many(self, photos: Sequence[bytes], options: dict | bytes | None
                     ) -> list[results.EnhanceResult | InferenceError]:
        answers = self.infer_all(contract.ENHANCE_MODEL,
                                 [contract.enhance_request(grpcclient.InferInput, p, options) for p in photos],
                                 contract.ENHANCE_OUTPUTS)
        return [a if isinstance(a, InferenceError) else _parsed(results.enhanced, a) for a in answers]

    def inspect(self, image: bytes, priority: int = 0) -> results.SideResult:
        return results.parsed(results.side, self.infer(contract.SINGLE_MODEL,
                                                       contract.inspect_request(grpcclient.InferInput, image),
                                                       priority))

    def enhance(self, photo: bytes, options: dict | bytes | None) -> results.EnhanceResult:
        r = self.infer(contract.ENHANCE_MODEL, contract.enhance_request(grpcclient.InferInput, photo, options))
        return results.parsed(results.enhanced, r)

"""The gateway's one shared Triton client: tritonclient's gRPC *aio* client (the sync
clients are not safe on an event loop), one channel reused by every request.

Calls the ``pcb_inspect`` / ``pcb_dual_inspect`` ensembles with the encoded image bytes
and turns the answers into plain dataclasses; Triton's errors become gateway errors:
a bad image -> 422 with the pre-processor's code, a full queue or a dead server -> 503
with Retry-After.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.core.errors import InvalidImage, ServiceUnavailable
from gateway.core.metrics import TRITON_ERRORS, TRITON_LATENCY
from pcb import taxonomy

SINGLE_MODEL = "pcb_inspect"
DUAL_MODEL = "pcb_dual_inspect"


@dataclass(frozen=True)
class Detection:
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int
    class_name: str


@dataclass(frozen=True)
class SideResult:
    detections: list[Detection]
    verdict_code: int
    confidence: float
    detector_version: int


@dataclass(frozen=True)
class DualResult:
    left: SideResult
    right: SideResult
    board_verdict_code: int
    board_confidence: float
    gpio_pin: int
    gpio_duration_ms: int
    detector_version: int
    inference_ms: float


def _image(name: str, data: bytes) -> grpcclient.InferInput:
    arr = np.frombuffer(data, np.uint8)[None]
    inp = grpcclient.InferInput(name, list(arr.shape), "UINT8")
    inp.set_data_from_numpy(arr)
    return inp


def _side(r, prefix: str = "") -> SideResult:
    tax = taxonomy.load()
    det = r.as_numpy(f"{prefix}DETECTIONS")[0]
    return SideResult(
        detections=[Detection(float(d[0]), float(d[1]), float(d[2]), float(d[3]), float(d[4]), int(d[5]),
                              tax.classes[int(d[5])].name) for d in det],
        verdict_code=int(r.as_numpy(f"{prefix}VERDICT")[0, 0]),
        confidence=float(r.as_numpy(f"{prefix}CONFIDENCE")[0, 0]),
        detector_version=int(r.as_numpy(f"{prefix}DETECTOR_VERSION")[0, 0]),
    )


def translate(e: InferenceServerException) -> Exception:
    """Triton's error -> the gateway's."""
    msg = e.message() or str(e)
    status = str(e.status() or "")
    if "INVALID_ARG" in status or status == "400":
        # the pre-processor's message starts with its stable code ("invalid_image: ...")
        tail = msg.rsplit("', ", 1)[-1] if "', " in msg else msg
        code, _, text = tail.partition(": ")
        if code in {"invalid_image", "unsupported_image", "image_too_large", "empty_image", "image_aspect_ratio",
                    "output_too_large", "invalid_options", "enhance_failed"}:
            return InvalidImage(text or tail, code)
        return InvalidImage(tail)
    if "queue" in msg.lower() and ("max" in msg.lower() or "exceed" in msg.lower()):
        return ServiceUnavailable("the inference queue is full", "inference_overloaded", 1)
    return ServiceUnavailable(f"inference service unavailable: {msg[:200]}", "inference_unavailable", 2)


INT32_MAX = 2**31 - 1


def channel_args(lb_policy: str | None) -> list[tuple[str, object]]:
    """gRPC channel options. Reconnects are quick (100 ms first, 1 s at most): gRPC's
    default backoff (1 s, then growing) left the gateway answering 503 for 1.5 s after
    Triton was back. With ``lb_policy="round_robin"`` and a target naming every replica
    (``dns:///triton-pods:8001`` for a headless Service, ``ipv4:10.0.0.5:8001,10.0.0.6:8001``),
    every request picks the next replica, where one long-lived connection through a
    ClusterIP Service would pin a client to one replica. tritonclient's message-size limits
    are restated here, because passing options replaces them."""
    args: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", INT32_MAX), ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000)]
    if lb_policy:
        args.append(("grpc.lb_policy_name", lb_policy))
    return args


class TritonService:
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

    async def _infer(self, model: str, inputs: list) -> tuple[object, float]:
        t0 = time.perf_counter()
        try:
            r = await self.client.infer(model, inputs, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            err = translate(e)
            TRITON_ERRORS.labels(model, getattr(err, "code", "error")).inc()
            raise err from None
        dt = time.perf_counter() - t0
        TRITON_LATENCY.labels(model).observe(dt)
        return r, dt * 1000

    async def inspect(self, image: bytes) -> tuple[SideResult, float]:
        r, ms = await self._infer(SINGLE_MODEL, [_image("IMAGE", image)])
        return _side(r), ms

    async def inspect_dual(self, left: bytes, right: bytes) -> DualResult:
        r, ms = await self._infer(DUAL_MODEL, [_image("LEFT_IMAGE", left), _image("RIGHT_IMAGE", right)])
        left_r, right_r = _side(r, "LEFT_"), _side(r, "RIGHT_")
        return DualResult(
            left=left_r, right=right_r,
            board_verdict_code=int(r.as_numpy("BOARD_VERDICT")[0, 0]),
            board_confidence=float(r.as_numpy("BOARD_CONFIDENCE")[0, 0]),
            gpio_pin=int(r.as_numpy("GPIO_PIN")[0, 0]),
            gpio_duration_ms=int(r.as_numpy("GPIO_DURATION_MS")[0, 0]),
            detector_version=left_r.detector_version,
            inference_ms=ms,
        )

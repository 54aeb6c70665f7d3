"""What a worker does with one item's bytes, per job kind, against Triton.

``run(payloads)`` sends all payloads of a sub-batch at once (one request per image, all in
flight together) so Triton's dynamic batcher executes them as one batch, and returns one
outcome per payload: a result dict, a permanent :class:`ItemError` (this item is bad), or it
raises :class:`Transient` (Triton is down or full: retry the chunk later).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.services.triton import channel_args
from pcb import taxonomy

INSPECT_MODEL = "pcb_inspect"
ENHANCE_MODEL = "face_enhance"
# a photo's own fault (Triton answers these per request, as INVALID_ARG): fail the item, no retry
BAD_INPUT_CODES = ("invalid_image", "unsupported_image", "image_too_large", "image_aspect_ratio", "empty_image",
                   "bad_batch", "invalid_options", "output_too_large", "enhance_failed")


class ItemError(Exception):
    """This item cannot be processed (unreadable, not an image): a failed item, no retry."""


class Transient(Exception):
    """The service behind the worker failed (Triton down, queue full, database down)."""


def classify(e: InferenceServerException) -> Exception:
    msg = e.message() or str(e)
    status = str(e.status() or "")
    if "INVALID_ARG" in status or any(code in msg for code in BAD_INPUT_CODES):
        return ItemError(msg.rsplit("', ", 1)[-1][:300])
    return Transient(f"triton: {msg[:300]}")


class TritonBatch:
    """One gRPC client per worker thread (the sync client is not shared across threads)."""

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
        channel connects at once, so the task's retry really tries again."""
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass

    def infer_all(self, model: str, inputs: Sequence[list], outputs: list[str]) -> list:
        """All requests in flight at once; one InferResult or exception per request."""
        done = threading.Semaphore(0)
        results: list = [None] * len(inputs)

        def callback(i):
            def cb(result, error):
                results[i] = error if error is not None else result
                done.release()
            return cb

        client = self.client()
        for i, inp in enumerate(inputs):
            try:
                client.async_infer(model, inp, callback(i), client_timeout=self.timeout_s,
                                   outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
            except InferenceServerException as e:
                results[i] = e
                done.release()
        for _ in inputs:
            if not done.acquire(timeout=self.timeout_s + 5):
                self.reset()
                raise Transient("triton: no answer in time")
        if any(isinstance(r, InferenceServerException) and isinstance(classify(r), Transient) for r in results):
            self.reset()
        return results


def bytes_input(name: str, data: bytes, dtype: str = "UINT8") -> grpcclient.InferInput:
    if dtype == "BYTES":
        arr = np.array([[data]], dtype=object)
    else:
        arr = np.frombuffer(data, np.uint8)[None]
    inp = grpcclient.InferInput(name, list(arr.shape), dtype)
    inp.set_data_from_numpy(arr)
    return inp


class InspectProcessor:
    """Re-inspection of archived board images through the ``pcb_inspect`` ensemble."""

    kind = "inspect"
    outputs = ["DETECTIONS", "VERDICT", "CONFIDENCE", "DETECTOR_VERSION"]

    def __init__(self, triton: TritonBatch):
        self.triton = triton
        self.tax = taxonomy.load()

    def run(self, payloads: Sequence[bytes], names: Sequence[str], job_dir: Path) -> list:
        answers = self.triton.infer_all(INSPECT_MODEL, [[bytes_input("IMAGE", p)] for p in payloads],
                                        self.outputs)
        return [self._outcome(a) for a in answers]

    def _outcome(self, a):
        if isinstance(a, InferenceServerException):
            err = classify(a)
            if isinstance(err, Transient):
                raise err
            return err
        code = int(a.as_numpy("VERDICT")[0, 0])
        verdict = self.tax.verdict(code)
        defects = [{"class": self.tax.classes[int(d[5])].name, "score": round(float(d[4]), 4),
                    "box": [round(float(v), 1) for v in d[:4]]} for d in a.as_numpy("DETECTIONS")[0]]
        return {"verdict": verdict.name, "verdict_code": code, "verdict_label": verdict.label,
                "confidence": round(float(a.as_numpy("CONFIDENCE")[0, 0]), 4),
                "detector_version": int(a.as_numpy("DETECTOR_VERSION")[0, 0]), "defects": defects}


class EnhanceProcessor:
    """Face-photo enhancement through the ``face_enhance`` pipeline; the output image is
    written beside the job's files and the result points at it."""

    kind = "enhance"
    outputs = ["IMAGE_OUT", "FACES", "INFO"]

    def __init__(self, triton: TritonBatch, options: dict | None = None):
        self.triton = triton
        self.options = json.dumps(options or {}).encode()

    def run(self, payloads: Sequence[bytes], names: Sequence[str], job_dir: Path) -> list:
        requests = [[bytes_input("IMAGE", p, "BYTES"), bytes_input("OPTIONS", self.options, "BYTES")]
                    for p in payloads]
        answers = self.triton.infer_all(ENHANCE_MODEL, requests, self.outputs)
        out = []
        for name, a in zip(names, answers):
            if isinstance(a, InferenceServerException):
                err = classify(a)
                if isinstance(err, Transient):
                    raise err
                out.append(err)
                continue
            # same relative name under out/ (the pipeline keeps the format: PNG stays PNG)
            target = job_dir / "out" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(a.as_numpy("IMAGE_OUT").reshape(-1)[0]))
            info = json.loads(bytes(a.as_numpy("INFO").reshape(-1)[0]) or b"{}")
            out.append({"output": str(target), "faces": int(a.as_numpy("FACES").reshape(-1)[0]),
                        "no_face": bool(info.get("no_face", False))})
        return out


def make_processor(kind: str, triton: TritonBatch, options: dict | None = None):
    if kind == "inspect":
        return InspectProcessor(triton)
    if kind == "enhance":
        return EnhanceProcessor(triton, options)
    raise ValueError(f"unknown job kind {kind!r}")

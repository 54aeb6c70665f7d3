"""One classifier for every failed call: what Triton's status code says, refined by the
model's own stable error code.

Every python model of the repository answers a request it refuses with INVALID_ARG and a
message that starts with a stable code (``invalid_image: ...``, ``output_too_large: ...``);
Triton may wrap that message (an ensemble prefixes the step that failed), so the code is
found as a ``code:`` token from the registry below, never by searching the text for words.
A service failure inside a model (``detector_failed``, ``restorer_failed``) carries no
INVALID_ARG and is retryable like an unreachable server.

| status                       | error         | retry |
|------------------------------|---------------|-------|
| a service code (any status)  | Unavailable, with that code | yes |
| INVALID_ARGUMENT / HTTP 400  | BadInput      | no: the same bytes fail the same way |
| UNAVAILABLE, queue full      | Overloaded    | yes, soon |
| anything else (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...) | Unavailable | yes |

Triton's core gives a full queue the same UNAVAILABLE status as a server that cannot be
reached; its one fixed phrase for it ("Exceeds maximum queue size") is the only text this
module reads, and only to tell "busy" from "down" for the Retry-After hint.
"""

from __future__ import annotations

import re

from tritonclient.utils import InferenceServerException

# the models' refusals of a request's input (pcb/image_decode.py, enhance/options.py,
# enhance/request.py, the pre-processors' batch check)
BAD_INPUT_CODES = frozenset({"invalid_image", "unsupported_image", "image_too_large", "empty_image",
                             "image_aspect_ratio", "bad_batch", "invalid_options", "output_too_large",
                             "enhance_failed"})
# failures of a model's own machinery or of the platform's setup (serving/templates,
# face_enhance's BLS calls, a post-processor or fuser handed a code its taxonomy lacks):
# never the request's fault, whatever status they travel with
SERVICE_CODES = frozenset({"detector_failed", "model_failed", "restorer_failed", "upsampler_failed",
                           "preprocess_failed", "postprocess_failed", "invalid_verdict"})
QUEUE_FULL = "Exceeds maximum queue size"
_CODE = re.compile(r"(?<![A-Za-z0-9_])([a-z][a-z0-9_]*): ")


class InferenceError(Exception):
    retryable = True
    code = "inference_unavailable"

    def __init__(self, message: str, code: str | None = None, model: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.model = model


class BadInput(InferenceError):
    """The request's own fault: the model refused its input."""
    retryable = False
    code = "invalid_image"


class Overloaded(InferenceError):
    """Triton's queue for the model is full: try again in a moment."""
    code = "inference_overloaded"


class Unavailable(InferenceError):
    """Triton cannot be reached, timed out, or a model's machinery failed."""
    code = "inference_unavailable"


def status_of(e: InferenceServerException) -> str:
    """``StatusCode.INVALID_ARGUMENT`` (gRPC) or ``400`` (HTTP) -> ``INVALID_ARGUMENT``."""
    s = str(e.status() or "")
    s = s.rsplit(".", 1)[-1]
    return {"400": "INVALID_ARGUMENT", "503": "UNAVAILABLE", "404": "NOT_FOUND"}.get(s, s or "UNKNOWN")


def model_code(message: str, registry: frozenset[str] = BAD_INPUT_CODES | SERVICE_CODES) -> tuple[str | None, str]:
    """The model's stable code in a (possibly wrapped) message, and the text after it."""
    for m in _CODE.finditer(message):
        if m.group(1) in registry:
            return m.group(1), message[m.end():].strip()
    return None, message.strip()


def classify(e: InferenceServerException, model: str | None = None) -> InferenceError:
    msg = e.message() or str(e)
    status = status_of(e)
    code, text = model_code(msg)
    if code in SERVICE_CODES:
        return Unavailable(f"inference service failed: {code}: {text[:200]}", code, model)
    if status == "INVALID_ARGUMENT":
        return BadInput(text or msg, code if code in BAD_INPUT_CODES else "invalid_image", model)
    if status == "UNAVAILABLE" and QUEUE_FULL in msg:
        return Overloaded("the inference queue is full", None, model)
    return Unavailable(f"inference service unavailable: {msg[:200]}", None, model)

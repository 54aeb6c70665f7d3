"""The client side of every Triton model and ensemble the product calls: one contract.

Owns the model and tensor names, the request builders, the typed results, the one error
classifier (Triton status codes and the models' stable error codes), the gRPC channel
options (reconnect backoff, replica balancing), both transports (``aio`` for the async
gateway, ``sync`` for the batch engine's worker threads, the demo, the benchmarks and the
tests) and the model-repository API (``repository_api``: hot-swap, config overrides,
statistics).

May import: tritonclient, numpy, ``pcb.taxonomy``. Nothing in it knows HTTP, the database or
Celery; callers map :class:`inference.errors.InferenceError` to their own answers.
"""

from inference.contract import DUAL_MODEL, ENHANCE_MODEL, SINGLE_MODEL
from inference.errors import BadInput, InferenceError, Overloaded, Unavailable, classify
from inference.results import Detection, DualResult, EnhanceResult, SideResult

__all__ = ["DUAL_MODEL", "ENHANCE_MODEL", "SINGLE_MODEL", "BadInput", "Detection", "DualResult", "EnhanceResult",
           "InferenceError", "Overloaded", "SideResult", "Unavailable", "classify"]

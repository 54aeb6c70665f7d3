"""Triton adapter: fuse two side verdicts into the board verdict (pcb/verdict.py)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from pcb.verdict import SideVerdict, fuse


def _scalar(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]


def _invalid(msg: str):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:  # one bad request (a verdict code out of range) fails alone, never its batch
                left = SideVerdict(int(_scalar(request, "VERDICT_LEFT")), float(_scalar(request, "CONFIDENCE_LEFT")))
                right = SideVerdict(int(_scalar(request, "VERDICT_RIGHT")),
                                    float(_scalar(request, "CONFIDENCE_RIGHT")))
                board = fuse(left, right)
            except Exception as e:  # noqa: BLE001 - this request only
                responses.append(pb_utils.InferenceResponse(error=_invalid(f"invalid_verdict: {e}")))
                continue
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("BOARD_VERDICT", np.array([[board.code]], np.int32)),
                pb_utils.Tensor("BOARD_CONFIDENCE", np.array([[board.confidence]], np.float32)),
                pb_utils.Tensor("GPIO_PIN", np.array([[board.gpio_pin]], np.int32)),
                pb_utils.Tensor("GPIO_DURATION_MS", np.array([[board.gpio_duration_ms]], np.int32)),
            ]))
        return responses

"""Triton adapter: NMS + boxes back to image pixels + side verdict (logic in pcb/)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from pcb import taxonomy
from pcb.postprocess import PostprocessConfig, postprocess


def _invalid(msg: str):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.cfg = PostprocessConfig.from_strings({k: v["string_value"] for k, v in params.items()})
        self.names = np.array([n.encode() for n in taxonomy.load().class_names], dtype=np.object_)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:  # one malformed request fails alone, never the batch it was in
                raw = pb_utils.get_input_tensor_by_name(request, "output0").as_numpy()
                transform = pb_utils.get_input_tensor_by_name(request, "TRANSFORM").as_numpy()
                det, verdict = postprocess(raw[0], transform[0], self.cfg)
            except Exception as e:  # noqa: BLE001 - this request only
                responses.append(pb_utils.InferenceResponse(error=_invalid(f"postprocess_failed: {e}")))
                continue
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("DETECTIONS", det[None]),
                pb_utils.Tensor("CLASS_NAMES", self.names[det[:, 5].astype(np.int64)][None]),
                pb_utils.Tensor("VERDICT", np.array([[verdict.code]], np.int32)),
                pb_utils.Tensor("CONFIDENCE", np.array([[verdict.confidence]], np.float32)),
            ]))
        return responses

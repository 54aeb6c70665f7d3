"""Triton adapter for the CPU layout of ``pcb_detector``: the whole side inspection (decode,
letterbox, onnxruntime, NMS, verdict) in one step over the dynamic batch.

Copied into each exported version directory next to ``model.onnx`` by ``python -m export
yolo --target onnx``; the logic is serving/side_inspector.py.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from serving import cpu_priority
from serving.side_inspector import SideConfig, SideInspector


def _error(e):
    # INVALID_ARG makes Triton answer 400 rather than 500: the caller's image, not the server
    # (pb_utils is only complete at run time, not when the stub auto-completes the config)
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if e.bad_input else None
    return pb_utils.TritonError(str(e), code) if code is not None else pb_utils.TritonError(str(e))


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        # a shadow version (serving/admin.py) runs on cycles the line leaves: before the
        # onnxruntime threads start, so they inherit it
        cpu_priority.lower(params.get("cpu_priority", {}).get("string_value", "normal"))
        cfg = SideConfig.from_strings({k: v["string_value"] for k, v in params.items()})
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.side = SideInspector(path, cfg)
        self.side.warm_up()  # the model is not READY until this returns

    def execute(self, requests):
        images = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        responses = []
        for out in self.side.inspect(images):
            if isinstance(out, Exception):
                responses.append(pb_utils.InferenceResponse(error=_error(out)))
            else:
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, arr) for name, arr in out.items()]))
        return responses

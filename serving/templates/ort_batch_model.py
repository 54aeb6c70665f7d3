"""Triton adapter for the CPU layout of an ONNX model with one input and one output
(``face_restorer``, ``bg_upsampler``): every request the dynamic batcher hands over runs in one
onnxruntime call. Copied next to ``model.onnx`` by ``python -m export gfpgan|realesrgan``.

Requests with different spatial sizes (upsampler tiles of two tile settings) cannot be
concatenated: they run as separate groups of the same call. A call that fails is retried
request by request, so a request that fails alone fails alone.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from serving import cpu_priority
from serving.ort_detector import OrtDetector


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.input = cfg["input"][0]["name"]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = OrtDetector(path, int(params.get("intra_op_threads", "0")))
        # after the session: its thread pool exists and is lowered with the rest
        cpu_priority.lower(params.get("cpu_priority", "normal"))

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        # grouped by shape, a failing call retried request by request: only a request that fails alone fails
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"model_failed: {out}"))
                if isinstance(out, Exception) else
                pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in out.items()])
                for out in self.session.run_requests(inputs)]

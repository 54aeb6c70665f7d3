"""Triton adapter for the CPU layout of ``pcb_detector``: onnxruntime over the dynamic batch.

Copied into each exported version directory next to ``model.onnx`` by ``python -m export
yolo --target onnx``; the logic is serving/ort_detector.py. A request that fails (an input
the ONNX file refuses) fails alone: its batch neighbours get their answers.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from serving.ort_detector import OrtDetector


def _input(request):
    try:
        return pb_utils.get_input_tensor_by_name(request, "images").as_numpy()
    except Exception as e:  # noqa: BLE001 - this request's input only
        return e


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0"))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.detector = OrtDetector(path, threads)

    def execute(self, requests):
        outputs = self.detector.run_requests([_input(r) for r in requests])
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"detector_failed: {out}"))
                if isinstance(out, Exception) else
                pb_utils.InferenceResponse([pb_utils.Tensor(name, arr) for name, arr in out.items()])
                for out in outputs]

"""Triton adapter for the CPU layout of ``pcb_detector``: onnxruntime over the dynamic batch.

Copied into each exported version directory next to ``model.onnx`` by ``python -m export
yolo --target onnx``; the logic is serving/ort_detector.py.
"""

import json
import os

import triton_python_backend_utils as pb_utils

from serving.ort_detector import OrtDetector


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "0"))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.detector = OrtDetector(path, threads)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        try:
            outputs = self.detector.run_split(inputs)
        except Exception as e:  # a shape the ONNX file refuses: fail these requests, not the server
            err = pb_utils.TritonError(f"detector_failed: {e}")
            return [pb_utils.InferenceResponse(error=err) for _ in requests]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, arr) for name, arr in out.items()])
            for out in outputs
        ]

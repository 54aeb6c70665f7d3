"""Triton adapter (BLS): decode, detect + align every photo of the batch, restore all face
crops in one call to the restorer model, upsample the backgrounds, paste back, encode.
Logic in enhance/ (pipeline.py, request.py); this file only moves tensors.

A bad photo fails only its own request (``enhance/request.py`` turns any failure of one
photo into that photo's INVALID_ARG error); a restorer that is down fails the photos that
needed it with a plain error, which callers may retry.
"""

import json
import os

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

from enhance.face_detect import make_detector
from enhance.pipeline import to_tensor
from enhance.request import RequestError, ServiceError, as_request_error, finish_request, prepare_request
from serving import cpu_priority


def _error(msg):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)


def _refused(e: RequestError):
    return pb_utils.InferenceResponse(error=_error(str(e)))


def _scalar(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    v = t.as_numpy().reshape(-1)
    if v.size > 1:  # one response per request carries one photo: a stacked batch would lose the rest
        raise RequestError("bad_batch", f"send one photo per request, not {v.size}")
    return v[0] if v.size else None


class TritonPythonModel:
    def initialize(self, args):
        # one OpenCV thread per instance: the instances and onnxruntime share the cores
        cv2.setNumThreads(1)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        # each instance is its own stub process: below the line's models on a shared CPU
        self.cpu_priority = cpu_priority.lower(params.get("cpu_priority", "normal"))
        self.restorer = params["restorer"]
        self.upsampler = params["upsampler"]
        self.max_pixels = int(params["max_pixels"])
        self.max_batch = int(params["restorer_max_batch"])
        det = params.get("face_detector", "")
        if det and not os.path.isabs(det):
            det = os.path.join(args["model_repository"], det)
        self.detector = make_detector(det)

    def _call(self, model, x):
        req = pb_utils.InferenceRequest(model_name=model, requested_output_names=["output"],
                                        inputs=[pb_utils.Tensor("input", x)])
        resp = req.exec()
        if resp.has_error():
            raise ServiceError(f"{model}: {resp.error().message()}")
        return pb_utils.get_output_tensor_by_name(resp, "output").as_numpy()

    def _restore(self, crops):
        # crops of every photo in this batch, in chunks the restorer's batcher accepts
        return np.concatenate([self._call(self.restorer, crops[i:i + self.max_batch])
                               for i in range(0, len(crops), self.max_batch)])

    def execute(self, requests):
        responses = [None] * len(requests)
        prepared = {}
        for i, request in enumerate(requests):
            try:
                prepared[i] = prepare_request(_scalar(request, "IMAGE"), _scalar(request, "OPTIONS"),
                                              self.detector, self.max_pixels)
            except Exception as e:  # noqa: BLE001 - this photo only
                responses[i] = _refused(as_request_error(e))
        order = [i for i in prepared if len(prepared[i][0].crops)]
        restored = {}
        try:
            if order:
                out = self._restore(np.concatenate([to_tensor(prepared[i][0].crops) for i in order]))
                start = 0
                for i in order:
                    n = len(prepared[i][0].crops)
                    restored[i] = out[start:start + n]
                    start += n
        except Exception as e:  # noqa: BLE001 - the restorer is down or refused: fail the photos that needed it
            for i in order:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"restorer_failed: {e}"))
                prepared.pop(i)
        for i, (p, source) in prepared.items():
            mine = restored.get(i, np.zeros((0, 3, 512, 512), np.float32))
            try:
                out, result = finish_request(p, mine, source, self._upsample)
            except RequestError as e:
                responses[i] = _refused(e)
                continue
            except ServiceError as e:  # the upsampler is down: not this photo's fault, retry later
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"upsampler_failed: {e}"))
                continue
            responses[i] = pb_utils.InferenceResponse([
                pb_utils.Tensor("IMAGE_OUT", np.array([[out]], dtype=np.object_)),
                pb_utils.Tensor("FACES", np.array([[result.faces]], np.int32)),
                pb_utils.Tensor("INFO", np.array([[json.dumps(result.info()).encode()]], dtype=np.object_)),
            ])
        return responses

    def _upsample(self, tiles):
        return self._call(self.upsampler, tiles)

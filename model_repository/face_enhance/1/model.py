"""Triton adapter (BLS): decode, detect + align every photo of the batch, restore all face
crops in one call to the restorer model, upsample the backgrounds, paste back, encode.
Logic in enhance/ (pipeline.py); this file only moves tensors."""

import json
import os

import cv2
import numpy as np
import triton_python_backend_utils as pb_utils

from enhance.face_detect import make_detector
from enhance.options import OptionError, parse_options
from enhance.pipeline import encode_like, finish, prepare, to_tensor
from pcb.image_decode import ImageError, decode_image


def _error(msg):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)


def _scalar(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    v = t.as_numpy().reshape(-1)
    return v[0] if v.size else None


class TritonPythonModel:
    def initialize(self, args):
        # one OpenCV thread per instance: the instances and onnxruntime share the cores
        cv2.setNumThreads(1)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
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
            raise RuntimeError(f"{model}: {resp.error().message()}")
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
                data = _scalar(request, "IMAGE")
                if data is None:
                    raise ImageError("empty_image", "no image")
                opts = parse_options(_scalar(request, "OPTIONS"))
                img = decode_image(bytes(data), self.max_pixels)
                prepared[i] = (prepare(img, opts, self.detector), bytes(data))
            except ImageError as e:
                responses[i] = pb_utils.InferenceResponse(error=_error(str(e)))
            except OptionError as e:
                responses[i] = pb_utils.InferenceResponse(error=_error(f"{e.code}: {e}"))
        order = [i for i in prepared if len(prepared[i][0].crops)]
        try:
            restored = (self._restore(np.concatenate([to_tensor(prepared[i][0].crops) for i in order]))
                        if order else None)
        except Exception as e:  # the restorer is down or refused: fail the photos that needed it
            for i in order:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"restorer_failed: {e}"))
            prepared = {i: v for i, v in prepared.items() if i not in order}
            order, restored = [], None
        start = 0
        for i, (p, source) in prepared.items():
            n = len(p.crops)
            mine = restored[start:start + n] if n else np.zeros((0, 3, 512, 512), np.float32)
            if n:
                start += n
            try:
                result = finish(p, mine, self._upsample if p.options.background else None)
                out, _ = encode_like(result.image, source)
            except Exception as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"enhance_failed: {e}"))
                continue
            responses[i] = pb_utils.InferenceResponse([
                pb_utils.Tensor("IMAGE_OUT", np.array([[out]], dtype=np.object_)),
                pb_utils.Tensor("FACES", np.array([[result.faces]], np.int32)),
                pb_utils.Tensor("INFO", np.array([[json.dumps(result.info()).encode()]], dtype=np.object_)),
            ])
        return responses

    def _upsample(self, tiles):
        return self._call(self.upsampler, tiles)

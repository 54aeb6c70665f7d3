"""Triton adapter: decode + letterbox (logic in pcb/image_decode.py, pcb/letterbox.py)."""

import json

import triton_python_backend_utils as pb_utils

from pcb.image_decode import ImageError, decode_image
from pcb.letterbox import letterbox
from pcb.side_config import DETECTOR_STRIDE, SideConfig


def _error(msg):
    # INVALID_ARG makes Triton answer 400 rather than 500 (pb_utils is only complete at run
    # time, not when the stub imports this file to auto-complete the config)
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.cfg = SideConfig.from_strings({k: v["string_value"] for k, v in params.items()})
        self.stride = DETECTOR_STRIDE if self.cfg.rect else 0

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            try:
                if data.shape[0] != 1:
                    raise ImageError("bad_batch", "send one encoded image per request")
                img = decode_image(data[0], self.cfg.max_pixels)
                chw, transform = letterbox(img, self.cfg.imgsz, self.stride)
            except ImageError as e:
                # only this request fails; its neighbours in the batch go on
                responses.append(pb_utils.InferenceResponse(error=_error(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("images", chw[None]),
                pb_utils.Tensor("TRANSFORM", transform[None]),
            ]))
        return responses

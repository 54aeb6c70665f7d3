"""Triton adapter: decode + letterbox (logic in pcb/image_decode.py and pcb/letterbox.py;
with the parameter ``decode: gpu``, the whole batch at once in serving/gpu_preprocess.py)."""

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


def _encoded(request):
    data = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
    if data.shape[0] != 1:
        raise ImageError("bad_batch", "send one encoded image per request")
    return data[0]


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.cfg = SideConfig.from_strings({k: v["string_value"] for k, v in params.items()})
        self.stride = DETECTOR_STRIDE if self.cfg.rect else 0
        self.batch = None
        if self.cfg.decode != "cpu":  # torch is imported only here: the CPU layout never loads it
            from serving.gpu_preprocess import TorchPreprocessor, device_for

            device = device_for(self.cfg.decode, args["model_instance_kind"], args["model_instance_device_id"])
            self.batch = TorchPreprocessor(self.cfg.imgsz, self.stride, self.cfg.max_pixels, device)

    def execute(self, requests):
        if self.batch is not None:
            return self._execute_batch(requests)
        responses = []
        for request in requests:
            try:
                img = decode_image(_encoded(request), self.cfg.max_pixels)
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

    def _execute_batch(self, requests):
        from torch.utils.dlpack import to_dlpack

        blobs, bad = {}, {}
        for n, request in enumerate(requests):
            try:
                blobs[n] = _encoded(request)
            except ImageError as e:
                bad[n] = e
        results = dict(zip(blobs, self.batch(list(blobs.values())))) if blobs else {}
        responses = []
        for n in range(len(requests)):
            r = bad.get(n) or results[n]
            if isinstance(r, ImageError):  # only this request fails, as on the CPU path
                responses.append(pb_utils.InferenceResponse(error=_error(str(r))))
                continue
            # the letterboxed batch stays on the GPU: DLPack hands it to the detector uncopied
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor.from_dlpack("images", to_dlpack(r.images)),
                pb_utils.Tensor("TRANSFORM", r.transform),
            ]))
        return responses

    def finalize(self):
        self.batch = None

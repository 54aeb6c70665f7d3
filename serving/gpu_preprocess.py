"""Decode + letterbox a whole batch with torch: nvJPEG on the GPU (the split layout's
``pcb_preprocess`` with ``decode: gpu``), the same code on the CPU for the tests.

The output is exactly the OpenCV path's (``pcb.image_decode`` + ``pcb.letterbox``): float32
RGB CHW in [0, 1], resized with bilinear half-pixel sampling (OpenCV's INTER_LINEAR, no
antialias), rounded to 8 bits as OpenCV's uint8 resize is, padded with 114/255, and the
same transform vector. Only the decoders' rounding differs (libjpeg-turbo vs nvJPEG).

Per request, as the CPU path: a header that fails ``check_header`` gets its ``ImageError``;
an image the GPU is not given (``serving.jpeg_route``) or one nvJPEG rejects is decoded by
OpenCV, which either succeeds or gives the CPU path's own refusal. One bad image never fails
its batch neighbours. torch is imported here only: the CPU layout never loads it.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from pcb.image_decode import MAX_PIXELS, ImageError, check_header, decode_image, truncated_jpeg
from pcb.letterbox import PAD_VALUE, Geometry, geometry, letterbox
from serving.jpeg_route import gpu_decodable

SLICE_PIXELS = 64_000_000  # decoded pixels resized at once (x3 channels x4 bytes on the device)


def decode_jpegs(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    """Encoded JPEG(s) (uint8 tensors on the CPU) -> uint8 RGB [3, h, w] tensor(s) on
    ``device``: nvJPEG on a CUDA device (one batched call for a list), libjpeg-turbo on the CPU."""
    # torchvision 0.29 deprecates its decoders in favour of TorchCodec, warning on each call;
    # 0.29 is pinned (constraints.txt) and still ships nvJPEG decoding
    cuda = device.type == "cuda"
    if cuda:
        # torchvision's nvJPEG decode runs on a private stream not ordered after the caller's
        # and can write into blocks the allocator recycled while queued kernels still read
        # them (pytorch/vision#9606, H100; torchcodec#1634): nothing may be in flight before
        torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    if cuda:  # ... nor may our kernels read the outputs before that private stream is done
        torch.cuda.synchronize(device)
    return out


@dataclass(frozen=True)
class Prepared:
    """One request's detector input: ``images`` [1, 3, H, W] float32 on the device,
    ``transform`` [1, 6] float32 (pcb/letterbox.py)."""
    images: torch.Tensor
    transform: np.ndarray


class TorchPreprocessor:
    def __init__(self, imgsz: int, stride: int, max_pixels: int = MAX_PIXELS, device: str = "cpu"):
        self.imgsz, self.stride, self.max_pixels = imgsz, stride, max_pixels
        self.device = torch.device(device)
        self.decoded_on_device = 0  # counters for the bench and the tests
        self.decoded_by_opencv = 0

    def __call__(self, blobs: Sequence[np.ndarray | bytes]) -> list[Prepared | ImageError]:
        bufs = [np.frombuffer(b, np.uint8) if isinstance(b, bytes) else b.reshape(-1) for b in blobs]
        out: list[Prepared | ImageError | None] = [None] * len(bufs)
        to_device: list[int] = []
        for i, buf in enumerate(bufs):
            try:
                check_header(buf[:65536].tobytes(), self.max_pixels)
            except ImageError as e:
                out[i] = e
                continue
            if gpu_decodable(buf.tobytes()) and not truncated_jpeg(buf):
                to_device.append(i)
        decoded = self._decode(bufs, to_device)
        self.decoded_on_device += len(decoded)
        for i, buf in enumerate(bufs):
            if out[i] is None and i not in decoded:
                out[i] = self._opencv(buf)
        for i, prepared in self._letterbox(decoded).items():
            out[i] = prepared
        if self.device.type == "cuda":  # results are final when handed over (DLPack, no stream)
            torch.cuda.synchronize(self.device)
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    def _decode(self, bufs: list[np.ndarray], idx: list[int]) -> dict[int, torch.Tensor]:
        """uint8 RGB [3, h, w] tensors on the device; one batched nvJPEG call, and when it
        throws, one call per image so that a single odd image only loses its own GPU decode."""
        if not idx:
            return {}
        # copies: the request tensors may be read-only, and encoded images are small
        data = [torch.from_numpy(bufs[i].copy()) for i in idx]
        try:
            return dict(zip(idx, decode_jpegs(data, self.device)))
        except RuntimeError:
            pass
        out = {}
        for i, d in zip(idx, data):
            try:
                out[i] = decode_jpegs(d, self.device)
            except RuntimeError:
                continue  # OpenCV decodes it or refuses it with the CPU path's code
        return out

    def _opencv(self, buf: np.ndarray) -> Prepared | ImageError:
        try:
            chw, transform = letterbox(decode_image(buf, self.max_pixels), self.imgsz, self.stride)
        except ImageError as e:
            return e
        self.decoded_by_opencv += 1
        return Prepared(torch.from_numpy(chw)[None].to(self.device), transform[None])

    def _letterbox(self, decoded: dict[int, torch.Tensor]) -> dict[int, Prepared]:
        """Images of one size (a camera's) are resized and padded as one batch."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in decoded.items():
            groups[(img.shape[1], img.shape[2])].append(i)
        out = {}
        for (h, w), same_size in groups.items():
            g = geometry(w, h, self.imgsz, self.stride)
            # in slices of at most SLICE_PIXELS: 16 frames at the 40 MP limit as one float
            # tensor would ask a small card for ~8 GB and fail the whole batch
            per_slice = max(1, SLICE_PIXELS // (h * w))
            for start in range(0, len(same_size), per_slice):
                out.update(self._letterbox_slice(decoded, same_size[start:start + per_slice], g, h, w))
        return out

    @staticmethod
    def _letterbox_slice(decoded: dict[int, torch.Tensor], idx: list[int], g: Geometry, h: int,
                         w: int) -> dict[int, Prepared]:
        x = torch.stack([decoded[i] for i in idx]).float()
        if (g.new_w, g.new_h) != (w, h):
            # half-pixel bilinear without antialias is cv2.INTER_LINEAR; back to 8 bits
            # rounding halves up as OpenCV's fixed-point uint8 resize does (torch.round
            # would round them to even: 1 level off on an eighth of a 2x downscale)
            x = F.interpolate(x, size=(g.new_h, g.new_w), mode="bilinear", align_corners=False,
                              antialias=False).add_(0.5).floor_().clamp_(0, 255)
        x = F.pad(x, (g.left, g.right, g.top, g.bottom), value=float(PAD_VALUE))
        x.mul_(1.0 / 255.0)
        transform = g.transform()[None]
        return {i: Prepared(x[k:k + 1], transform) for k, i in enumerate(idx)}


def device_for(decode: str, instance_kind: str, device_id: str | int) -> str:
    """The torch device of a Triton instance (``args["model_instance_kind"]`` and
    ``["model_instance_device_id"]``) for ``decode`` (pcb.side_config.DECODERS). ``gpu`` on a
    CPU instance is a configuration error, refused at load rather than run slowly."""
    if decode == "gpu":
        if instance_kind != "GPU":
            raise ValueError(f"decode: gpu needs a KIND_GPU instance group, this instance is {instance_kind}")
        return f"cuda:{int(device_id)}"
    if decode == "torch-cpu":
        return "cpu"
    raise ValueError(f"decode {decode!r} does not run through torch")

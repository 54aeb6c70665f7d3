"""The GPU layout's batched pre-processing (serving/gpu_preprocess.py), run here on the CPU:
the same code with torchvision's CPU decoder in place of nvJPEG. What it must give is the
OpenCV path's answer (pcb.image_decode + pcb.letterbox) per request, pixels and refusals.

Tolerance: 1/255 (one 8-bit level), and none at the camera's 640x480. Both decoders here
are libjpeg-turbo (bit-identical); the letterbox rounds back to 8 bits halving up as OpenCV
does, so an exact 2x downscale is exact, while at other ratios OpenCV's 11-bit fixed-point
interpolation weights put about one value in ten one level off the float ones. nvJPEG on a
GPU rounds its IDCT and chroma upsampling differently again: bench/gpu_decode_check.py
measures that where a GPU is lent (docs/gpu.md)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import serving.gpu_preprocess as gp
from pcb.image_decode import ImageError, decode_image
from pcb.letterbox import letterbox
from pcb.side_config import SideConfig
from pcb.synthetic import render_board
from serving.gpu_preprocess import TorchPreprocessor, device_for
from serving.gpu_repository import assemble
from serving.jpeg_route import exif_orientation, gpu_decodable
from serving.repository import read_config

LEVEL = 1 / 255 + 1e-6


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A board at ``w x h`` with sensor noise (flat synthetic colours would hide rounding)."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(render_board(seed).image, (w, h), interpolation=cv2.INTER_AREA).astype(np.int16)
    return (img + rng.integers(-12, 13, img.shape)).clip(0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 85, progressive: bool = False) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality,
                                         cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    return buf.tobytes()


def with_orientation(data: bytes, orientation: int, order: str = "<") -> bytes:
    """``data`` with an APP1 Exif segment holding one IFD entry: Orientation."""
    mark = b"II" if order == "<" else b"MM"
    tiff = mark + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 1)
    tiff += struct.pack(order + "HHIH", 0x0112, 3, 1, orientation) + b"\0\0" + struct.pack(order + "I", 0)
    seg = b"Exif\0\0" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + data[2:]


def opencv_path(data: bytes, stride: int = 32) -> tuple[np.ndarray, np.ndarray]:
    return letterbox(decode_image(data), 320, stride)


def refusal(data: bytes) -> str:
    with pytest.raises(ImageError) as e:
        opencv_path(data)
    return e.value.code


ODD_SIZES = [(640, 480), (333, 517), (1001, 77), (97, 131), (320, 256), (2592, 1944)]


@pytest.mark.parametrize("stride", [32, 0])
def test_one_batch_of_odd_sizes_matches_the_opencv_path(stride):
    blobs = [jpeg(photo(w, h, i)) for i, (w, h) in enumerate(ODD_SIZES)]
    blobs += [jpeg(photo(640, 480, 9), 95, progressive=True),
              jpeg(cv2.cvtColor(photo(500, 375, 10), cv2.COLOR_BGR2GRAY))]
    prep = TorchPreprocessor(320, stride)
    out = prep(blobs)
    assert prep.decoded_on_device == len(blobs) and prep.decoded_by_opencv == 0
    for data, got, (w, h) in zip(blobs, out, ODD_SIZES + [(640, 480), (500, 375)]):
        ref, transform = opencv_path(data, stride)
        assert not isinstance(got, ImageError)
        assert got.images.shape == (1, *ref.shape) and got.images.dtype == gp.torch.float32
        assert got.images.is_contiguous()
        np.testing.assert_array_equal(got.transform[0], transform)
        diff = np.abs(got.images[0].numpy() - ref)
        assert diff.max() <= LEVEL, (w, h, diff.max() * 255)
        if (w, h) == (640, 480):  # the camera's frame: an exact 2x, the very same tensor
            assert diff.max() == 0


def test_the_camera_batch_is_letterboxed_as_one_tensor():
    out = TorchPreprocessor(320, 32)([jpeg(photo(640, 480, i)) for i in range(4)])
    assert all(not isinstance(r, ImageError) for r in out)
    # views of one [4, 3, 256, 320] tensor: one resize and one pad for the whole batch
    assert len({r.images.untyped_storage().data_ptr() for r in out}) == 1


def test_png_bmp_and_broken_images_get_the_opencv_answer_each_alone():
    good = [jpeg(photo(640, 480, i)) for i in range(3)]
    png = cv2.imencode(".png", photo(300, 200, 5))[1].tobytes()
    bmp = cv2.imencode(".bmp", photo(64, 48, 6))[1].tobytes()
    truncated = good[0][: len(good[0]) // 3]
    header_only = b"\xff\xd8\xff\xe0" + b"\0" * 40
    # a full-length JPEG without its quantisation tables: every decoder must refuse it
    # (without Huffman tables libjpeg-turbo falls back to the standard ones, as for MJPEG)
    no_tables = strip_segments(good[1], 0xDB)
    blobs = [good[0], png, bmp, truncated, good[1], header_only, no_tables, b"", b"not an image" * 5, good[2]]
    prep = TorchPreprocessor(320, 32)
    out = prep(blobs)
    for data, got in zip(blobs, out):
        try:
            ref, transform = opencv_path(data)
        except ImageError as e:
            assert isinstance(got, ImageError) and got.code == e.code, (got, e.code)
            continue
        assert not isinstance(got, ImageError)
        np.testing.assert_array_equal(got.transform[0], transform)
        assert np.abs(got.images[0].numpy() - ref).max() <= LEVEL
    assert [refusal(b) for b in (bmp, truncated, header_only, no_tables)] == [
        "unsupported_image", "invalid_image", "invalid_image", "invalid_image"]
    # the three good JPEGs on the device; the PNG by OpenCV; no_tables tried on both
    assert prep.decoded_on_device == 3 and prep.decoded_by_opencv == 1


def strip_segments(data: bytes, marker: int) -> bytes:
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if data[i + 1] != marker:
            out += data[i:i + 2 + seg_len]
        i += 2 + seg_len
    return bytes(out + data[i:])


def test_an_image_the_device_decoder_rejects_is_decoded_by_opencv(monkeypatch):
    """nvJPEG refusing one image (a format corner it lacks) throws for the whole batched
    call: its neighbours are decoded on the device one by one, it alone by OpenCV."""
    blobs = [jpeg(photo(640, 480, i)) for i in range(4)]
    odd = blobs[2]
    real = gp.decode_jpeg

    def fussy(data, **kw):
        items = data if isinstance(data, list) else [data]
        if any(t.numel() == len(odd) for t in items):
            raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_NOT_SUPPORTED")
        return real(data, **kw)

    monkeypatch.setattr(gp, "decode_jpeg", fussy)
    prep = TorchPreprocessor(320, 32)
    out = prep(blobs)
    assert prep.decoded_on_device == 3 and prep.decoded_by_opencv == 1
    for data, got in zip(blobs, out):
        assert not isinstance(got, ImageError)
        np.testing.assert_array_equal(got.images[0].numpy(), opencv_path(data)[0])


def test_exif_rotation_goes_to_opencv_which_applies_it():
    base = jpeg(photo(640, 480, 3))
    rotated = with_orientation(base, 6)
    assert decode_image(rotated).shape[:2] == (640, 480)  # OpenCV turned it upright
    prep = TorchPreprocessor(320, 32)
    upright, turned = prep([with_orientation(base, 1, ">"), rotated])
    assert prep.decoded_on_device == 1 and prep.decoded_by_opencv == 1
    assert not isinstance(upright, ImageError) and not isinstance(turned, ImageError)
    assert upright.images.shape == (1, 3, 256, 320) and turned.images.shape == (1, 3, 320, 256)
    np.testing.assert_array_equal(turned.images[0].numpy(), opencv_path(rotated)[0])


def test_jpeg_routing_reads_the_header():
    base = jpeg(photo(64, 48))
    assert gpu_decodable(base) and gpu_decodable(jpeg(photo(64, 48), progressive=True))
    assert gpu_decodable(with_orientation(base, 1)) and not gpu_decodable(with_orientation(base, 8, ">"))
    assert exif_orientation(with_orientation(base, 3)[6:][: 6 + 26]) == 3
    sof = base.index(b"\xff\xc0")
    arithmetic = base[:sof + 1] + b"\xc9" + base[sof + 2:]
    assert not gpu_decodable(arithmetic)
    assert not gpu_decodable(cv2.imencode(".png", photo(64, 48))[1].tobytes())
    assert not gpu_decodable(base[:20])  # no start of scan: OpenCV judges it


def test_the_device_follows_the_instance():
    assert device_for("gpu", "GPU", "1") == "cuda:1"
    assert device_for("torch-cpu", "CPU", 0) == "cpu"
    with pytest.raises(ValueError, match="KIND_GPU"):
        device_for("gpu", "CPU", 0)
    with pytest.raises(ValueError, match="decode must be one of"):
        SideConfig.from_strings({"decode": "nvjpeg"})


def test_the_gpu_repository_decodes_on_gpu_instances(tmp_path):
    assemble(tmp_path / "gpu", decode="gpu")
    gpu = read_config(tmp_path / "gpu" / "pcb_preprocess")
    again = mc.ModelConfig()  # what Triton reads back
    text_format.Parse((tmp_path / "gpu" / "pcb_preprocess" / "config.pbtxt").read_text(), again)
    assert again == gpu
    assert gpu.parameters["decode"].string_value == "gpu"
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    cpu = read_config(assemble(tmp_path / "cpu") and tmp_path / "cpu" / "pcb_preprocess")
    assert cpu.parameters["decode"].string_value == "cpu"
    assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    # nothing else changes: the batcher, priorities, tensors and parameters are the source's
    for cfg in (gpu, cpu):
        del cfg.instance_group[:]
        del cfg.parameters["decode"]
    assert gpu == cpu
    assert SideConfig.from_strings({k: v.string_value for k, v in again.parameters.items()}).decode == "gpu"

"""Enhancement models in the real Triton server: the face restorer answers the same as
PyTorch and onnxruntime on the same crops, face_enhance returns the photo with its faces
found where they were drawn, and concurrent photos' crops are restored in shared batches."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from enhance.pipeline import to_tensor
from enhance.synthetic import face_crop, face_photo
from export.enhance_nets import build
from serving.ort_detector import OrtDetector
from tests.conftest import encode

TOL = 1e-4


def _enhance(url: str, data: bytes, options: dict | None = None):
    c = grpcclient.InferenceServerClient(url)
    inputs = [grpcclient.InferInput("IMAGE", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[data]], dtype=np.object_))
    if options is not None:
        inputs.append(grpcclient.InferInput("OPTIONS", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[json.dumps(options).encode()]], dtype=np.object_))
    return c.infer("face_enhance", inputs)


def test_restorer_parity_torch_onnx_triton(enhance_triton, enhance_repository):
    crops = to_tensor(np.stack([face_crop(i) for i in range(3)]))
    with torch.no_grad():
        ref = build("gfpgan", narrow=True).eval()(torch.from_numpy(crops)).numpy()  # same seed as the export
    ort_out = OrtDetector(enhance_repository / "face_restorer" / "1" / "model.onnx").run(crops)["output"]
    c = httpclient.InferenceServerClient(enhance_triton.http_url)
    inp = httpclient.InferInput("input", list(crops.shape), "FP32")
    inp.set_data_from_numpy(crops)
    tri = c.infer("face_restorer", [inp]).as_numpy("output")
    d_onnx, d_triton = float(np.abs(ort_out - ref).max()), float(np.abs(tri - ref).max())
    print(f"face_restorer on 3 crops: torch vs onnx {d_onnx:.2e}, torch vs triton {d_triton:.2e}")
    assert d_onnx < TOL and d_triton < TOL
    assert np.array_equal(tri, ort_out)  # Triton runs that very ONNX file


def test_face_enhance_finds_the_faces_where_they_are(enhance_triton):
    img, marks = face_photo(11, faces=3)
    r = _enhance(enhance_triton.grpc_url, encode(img), {"quality": "fast", "upscale": 2})
    info = json.loads(r.as_numpy("INFO").reshape(-1)[0])
    assert int(r.as_numpy("FACES").reshape(-1)[0]) == 3 and not info["no_face"]
    for m in marks:  # each drawn nose lies in one returned box
        assert sum(b[0] < m[2, 0] < b[2] and b[1] < m[2, 1] < b[3] for b in info["boxes"]) == 1
    out = cv2.imdecode(np.frombuffer(r.as_numpy("IMAGE_OUT").reshape(-1)[0], np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (960, 1280, 3)


def test_face_enhance_refuses_bad_input_per_request(enhance_triton):
    with pytest.raises(InferenceServerException, match="unsupported_image"):
        _enhance(enhance_triton.grpc_url, b"not an image")
    with pytest.raises(InferenceServerException, match="invalid_options"):
        _enhance(enhance_triton.grpc_url, encode(face_photo(1)[0]), {"tile": 5})


def test_concurrent_photos_share_restorer_batches(enhance_triton):
    c = httpclient.InferenceServerClient(enhance_triton.http_url)

    def stats():
        s = c.get_inference_statistics("face_restorer")["model_stats"][0]
        return int(s["inference_count"]), int(s["execution_count"])

    inf0, exe0 = stats()
    photos = [encode(face_photo(300 + i, faces=2)[0]) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda d: _enhance(enhance_triton.grpc_url, d, {"quality": "fast"}), photos))
    assert all(int(r.as_numpy("FACES").reshape(-1)[0]) == 2 for r in results)
    inf1, exe1 = stats()
    crops, executions = inf1 - inf0, exe1 - exe0
    assert crops == 16 and executions < 8, (crops, executions)  # > 2 crops per restorer run on average

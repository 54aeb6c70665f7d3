"""Triton's admin APIs behind a key, on a real CPU Triton started with the same flags as
the compose and Kubernetes deployments: without the key the repository API is refused
(nobody on the network can unload the detector or load a python model), with it the admin
CLI / gateway hot-swap works, and inference needs no key."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serving.admin import AdminError, ModelAdmin
from serving.cpu_server import TritonServer, free_port
from tests.conftest import encode

KEY = "restricted-test-key"
APIS = "model-repository,shared-memory,model-config,trace,logging"


def test_repository_api_needs_the_key_and_inference_does_not(repository, tmp_path):
    from pcb.synthetic import render_board

    srv = TritonServer(repository=repository, ports={"http": free_port(), "grpc": free_port(), "metrics": free_port()},
                       log_file=tmp_path / "triton.log",
                       extra_args=[f"--http-restricted-api={APIS}:triton-admin-key={KEY}",
                                   f"--grpc-restricted-protocol={APIS}:triton-admin-key={KEY}"]).start(timeout=180)
    try:
        anonymous = httpclient.InferenceServerClient(srv.http_url.removeprefix("http://"))
        with pytest.raises(InferenceServerException):
            anonymous.unload_model("pcb_detector")  # the attack: the line's detector, gone
        with pytest.raises(InferenceServerException):
            anonymous.get_model_repository_index()
        with pytest.raises(AdminError):
            ModelAdmin(srv.http_url.removeprefix("http://"), repository).load("pcb_inspect")
        admin = ModelAdmin(srv.http_url.removeprefix("http://"), repository, admin_key=KEY)
        assert {r["model"] for r in admin.describe()} >= {"pcb_inspect", "pcb_detector"}
        assert admin.load("pcb_inspect") == [1]
        grpc = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException):
            grpc.unload_model("pcb_detector")
        img = np.frombuffer(encode(render_board(4).image), np.uint8)[None]
        inp = grpcclient.InferInput("IMAGE", list(img.shape), "UINT8")
        inp.set_data_from_numpy(img)
        r = grpc.infer("pcb_inspect", [inp])  # the line's inference: no key
        assert r.as_numpy("VERDICT").shape == (1, 1)
        assert anonymous.is_model_ready("pcb_detector")  # still served
    finally:
        srv.stop()

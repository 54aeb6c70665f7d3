"""Triton's admin APIs behind a key, on a real CPU Triton started with the same flags as
the compose and Kubernetes deployments: without the key the repository API is refused
(nobody on the network can unload the detector or load a python model), with it the admin
CLI / gateway hot-swap works, and inference needs no key."""

from __future__ import annotations

import pytest

from inference.repository_api import RepositoryAPI, RepositoryError
from inference.sync import SyncTriton
from serving.admin import AdminError, ModelAdmin
from serving.cpu_server import TritonServer
from tests.conftest import encode
from tests.triton_flags import RESTRICTED_APIS

KEY = "restricted-test-key"
APIS = ",".join(RESTRICTED_APIS)  # the deployments' list


def test_repository_api_needs_the_key_and_inference_does_not(repository, tmp_path):
    from pcb.synthetic import render_board

    srv = TritonServer(repository=repository, log_file=tmp_path / "triton.log",
                       extra_args=[f"--http-restricted-api={APIS}:triton-admin-key={KEY}",
                                   f"--grpc-restricted-protocol={APIS}:triton-admin-key={KEY}"]).start(timeout=180)
    try:
        anonymous = RepositoryAPI(srv.http_url.removeprefix("http://"))  # no key
        with pytest.raises(RepositoryError):
            anonymous.unload("pcb_detector")  # the attack: the line's detector, gone
        with pytest.raises(RepositoryError):
            anonymous.index()
        with pytest.raises(AdminError):
            ModelAdmin(srv.http_url.removeprefix("http://"), repository).load("pcb_inspect")
        admin = ModelAdmin(srv.http_url.removeprefix("http://"), repository, admin_key=KEY)
        assert {r["model"] for r in admin.describe()} >= {"pcb_inspect", "pcb_detector"}
        assert admin.load("pcb_inspect") == [1]
        with pytest.raises(RepositoryError):  # the same attack on the gRPC port
            RepositoryAPI(srv.grpc_url, protocol="grpc").unload("pcb_detector")
        # with the key, the gRPC repository API gives the HTTP one's answers, in its shape
        keyed, keyed_http = (RepositoryAPI(srv.grpc_url, KEY, protocol="grpc"),
                             RepositoryAPI(srv.http_url.removeprefix("http://"), KEY))
        assert {m["name"] for m in keyed.index()} == {m["name"] for m in keyed_http.index()} >= {"pcb_detector"}
        grpc_cfg, http_cfg = keyed.config("pcb_detector"), keyed_http.config("pcb_detector")
        assert (grpc_cfg["name"], grpc_cfg["max_batch_size"]) == (http_cfg["name"], http_cfg["max_batch_size"])
        line = SyncTriton(srv.grpc_url)
        assert line.inspect(encode(render_board(4).image)).detector_version == 1  # the line's inference: no key
        assert line.model_ready("pcb_detector")  # still served
        assert keyed.counts("pcb_inspect").inference_count >= 1
    finally:
        srv.stop()

"""TLS from edge to gateway, with a CA this test makes (openssl): the gateway, started as
the image starts it (``python -m gateway.serve`` with ``TLS_CERT_FILE`` and ``TLS_KEY_FILE``),
serves HTTPS from its certificate and nothing in plain HTTP; the edge verifies it against
the CA file from its config and talks; without that CA it refuses the server; it never
sends its key over plain HTTP to another machine unless told to."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest

from pi_edge.config import EdgeConfig
from pi_edge.sender import Sender, check_transport
from pi_edge.spool import Spool
from tests.gateway_server import GatewayServer


def _pki(d) -> dict:
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=test plant CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "gw.key", "-out", "gw.csr", "-subj", "/CN=gateway")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "gw.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "gw.crt",
        "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.crt", "cert": d / "gw.crt", "key": d / "gw.key"}


def test_edge_verifies_the_gateway_against_its_ca(tmp_path):
    pki = _pki(tmp_path)
    srv = GatewayServer({"TRITON_URL": "127.0.0.1:9", "DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                         "OUTBOX_PATH": str(tmp_path / "o.db"), "ADMIN_TOKEN": "tls-admin-token"},
                        tmp_path / "gw.log", tls=(pki["cert"], pki["key"])).start()
    try:
        assert srv.proc.args[-2:] == ["-m", "gateway.serve"]
        with pytest.raises(httpx.HTTPError):  # the port speaks TLS only
            httpx.get(srv.url.replace("https://", "http://") + "/health/live", timeout=10)
        key = httpx.post(f"{srv.url}/admin/devices", headers={"Authorization": "Bearer tls-admin-token"},
                         json={"device_id": "pi-tls", "side": "left"}, verify=str(pki["ca"])).json()["api_key"]

        def heartbeat(**cfg) -> bool:
            c = EdgeConfig(gateway_url=srv.url, device_id="pi-tls", api_key=key, spool_dir=str(tmp_path / "spool"),
                           **cfg)
            sender = Sender(c, Spool(c.spool_dir))

            async def go():
                try:
                    return await sender.heartbeat_once()
                finally:
                    await sender.client.aclose()

            return asyncio.run(go())

        assert heartbeat(ca_file=str(pki["ca"])) is True  # the plant's CA: verified, talking
        assert heartbeat() is False  # the system's store does not know this CA: refused
    finally:
        srv.stop()


def test_no_device_key_over_plain_http_to_another_machine():
    with pytest.raises(ValueError, match="plain HTTP"):
        check_transport(EdgeConfig(gateway_url="http://10.20.0.5:8080"))
    check_transport(EdgeConfig(gateway_url="http://10.20.0.5:8080", allow_plain_http=True))  # a lab bench, said so
    check_transport(EdgeConfig(gateway_url="http://127.0.0.1:8080"))  # this machine
    check_transport(EdgeConfig(gateway_url="https://gateway.plant.example"))

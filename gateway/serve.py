"""``python -m gateway.serve``: the gateway under uvicorn, over HTTPS when it is given a
certificate (``TLS_CERT_FILE`` + ``TLS_KEY_FILE``, optionally ``TLS_CA_FILE`` to require
client certificates). ``FORWARDED_ALLOW_IPS`` names the proxies whose X-Forwarded-For is
believed (default: none but loopback), so a client cannot pick its own address for the
per-address rate limits."""

from __future__ import annotations

import os
import ssl
from typing import Any

import uvicorn

from settings.environment import get_settings


def main() -> None:
    s = get_settings()
    tls: dict[str, Any] = {}
    if s.tls_cert_file or s.tls_key_file:
        if not (s.tls_cert_file and s.tls_key_file):
            raise SystemExit("HTTPS needs both TLS_CERT_FILE and TLS_KEY_FILE")
        tls = {"ssl_certfile": s.tls_cert_file, "ssl_keyfile": s.tls_key_file}
        if s.tls_ca_file:  # mutual TLS: edges present certificates signed by this CA
            tls.update(ssl_ca_certs=s.tls_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED)
    uvicorn.run("gateway.main:app", host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8080")),
                workers=1, proxy_headers=True, access_log=False,
                forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"), **tls)


if __name__ == "__main__":
    main()

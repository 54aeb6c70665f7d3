"""Triton's model-repository API (index, load, unload, statistics): the admin side of the
contract, used by ``serving.admin`` (hot-swap) and the gateway's admin routes.

Triton restricts this API to callers that send its admin key
(``--http-restricted-api=model-repository,shared-memory:triton-admin-key=<TRITON_ADMIN_KEY>``);
only the gateway and the admin CLI hold it."""

from __future__ import annotations

import tritonclient.http as http
from tritonclient.utils import InferenceServerException

ADMIN_KEY_HEADER = "triton-admin-key"


class RepositoryError(RuntimeError):
    """Triton refused a repository call; the message is Triton's."""


class RepositoryAPI:
    def __init__(self, url: str, admin_key: str | None = None, timeout_s: float = 300.0):
        self.client = http.InferenceServerClient(url, connection_timeout=10, network_timeout=timeout_s)
        self.headers = {ADMIN_KEY_HEADER: admin_key} if admin_key else None

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args, headers=self.headers)
        except InferenceServerException as e:
            raise RepositoryError(f"Triton refused to {what}: {e.message()}") from e

    def index(self) -> list[dict]:
        return self._call("list its repository", self.client.get_model_repository_index)

    def load(self, model: str) -> None:
        self._call(f"load {model}", self.client.load_model, model)

    def unload(self, model: str) -> None:
        self._call(f"unload {model}", self.client.unload_model, model)

    def statistics(self, model: str) -> dict:
        return self._call(f"give statistics of {model}", self.client.get_inference_statistics, model)

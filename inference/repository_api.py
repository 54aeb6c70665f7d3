"""Triton's model-repository API (index, load, unload, statistics, served config): the admin
side of the contract, used by ``serving.admin`` (hot-swap), the gateway's admin routes, the
benches and the tests that reconfigure a model.

Triton restricts this API to callers that send its admin key
(``--http-restricted-api=model-repository,shared-memory:triton-admin-key=<TRITON_ADMIN_KEY>``);
only the gateway and the admin CLI hold it. The product calls it over HTTP
(``TRITON_HTTP_URL``); ``protocol="grpc"`` makes the same calls on the gRPC port, which
Triton restricts by a flag of its own (``--grpc-restricted-protocol``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import tritonclient.grpc as grpcclient
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

ADMIN_KEY_HEADER = "triton-admin-key"
# Triton's gRPC server looks for a restricted protocol's header under this prefix
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


class RepositoryError(RuntimeError):
    """Triton refused a repository call; the message is Triton's."""


@dataclass(frozen=True)
class ModelStats:
    """A model's counters since it was loaded, summed over its loaded versions: requests
    answered (``inference_count``) and model executions (``execution_count``); fewer
    executions than requests means the dynamic batcher combined them."""
    inference_count: int
    execution_count: int


class RepositoryAPI:
    def __init__(self, url: str, admin_key: str | None = None, timeout_s: float = 300.0,
                 protocol: Literal["http", "grpc"] = "http"):
        self.grpc = protocol == "grpc"
        self.timeout_s = timeout_s
        self.client: http.InferenceServerClient | grpcclient.InferenceServerClient
        if self.grpc:
            self.client = grpcclient.InferenceServerClient(url)
        else:
            self.client = http.InferenceServerClient(url, connection_timeout=10, network_timeout=timeout_s)
        header = GRPC_HEADER_PREFIX + ADMIN_KEY_HEADER if self.grpc else ADMIN_KEY_HEADER
        self.headers = {header: admin_key} if admin_key else None

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn, *args, **kwargs):
        if self.grpc:
            kwargs["client_timeout"] = self.timeout_s
        try:
            return fn(*args, headers=self.headers, **kwargs)
        except InferenceServerException as e:
            raise RepositoryError(f"Triton refused to {what}: {e.message()}") from e

    def _read(self, what: str, fn, *args, key: str | None = None):
        """A JSON answer in the HTTP API's shape. gRPC answers a protobuf message: as JSON it
        has the same fields (64-bit numbers as strings), for some calls one level down under
        ``key``."""
        if not self.grpc:
            return self._call(what, fn, *args)
        answer = self._call(what, fn, *args, as_json=True)
        return answer.get(key) if key else answer

    def index(self) -> list[dict]:
        return self._read("list its repository", self.client.get_model_repository_index, key="models") or []

    def load(self, model: str, config: dict | None = None) -> None:
        """Load (or reload) ``model``; ``config`` replaces its config.pbtxt for this load. A
        later plain load keeps that override while the files on disk are unchanged: restore
        by loading the original config."""
        extra = {"config": json.dumps(config)} if config is not None else {}
        self._call(f"load {model}", self.client.load_model, model, **extra)

    def unload(self, model: str) -> None:
        self._call(f"unload {model}", self.client.unload_model, model)

    def statistics(self, model: str) -> dict:
        """Triton's whole statistics answer (``model_stats``: one entry per loaded version)."""
        return self._read(f"give statistics of {model}", self.client.get_inference_statistics, model)

    def counts(self, model: str) -> ModelStats:
        stats = self.statistics(model).get("model_stats", [])
        return ModelStats(inference_count=sum(int(s.get("inference_count", 0)) for s in stats),
                          execution_count=sum(int(s.get("execution_count", 0)) for s in stats))

    def counts_after(self, model: str, before: ModelStats, inferences: int, timeout_s: float = 5.0) -> ModelStats:
        """The counts once ``inferences`` more have been recorded since ``before``. A python
        backend model reports an execution's statistics after its responses have gone out,
        so a client that has every answer can still read the counts from before the last
        execution; this waits (bounded) for them to settle."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = self.counts(model)
            if now.inference_count - before.inference_count >= inferences or time.monotonic() > deadline:
                return now
            time.sleep(0.05)

    def config(self, model: str) -> dict:
        """The config Triton serves ``model`` with, as JSON (what :meth:`load` takes back)."""
        return self._read(f"give the config of {model}", self.client.get_model_config, model, key="config")

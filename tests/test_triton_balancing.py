"""Client-side gRPC balancing over two real Triton replicas (TRITON_GRPC_LB_POLICY): the
gateway's client and the batch workers' client spread requests over both; without the
policy one connection pins every request to one replica (what a ClusterIP Service gives)."""

from __future__ import annotations

import pytest

from batch.local_workers import wait_for
from gateway.services.triton import TritonService
from inference import SINGLE_MODEL as INSPECT_MODEL
from inference.repository_api import RepositoryAPI
from inference.sync import SyncTriton
from pcb.synthetic import render_board
from tests.conftest import encode, start_triton


@pytest.fixture(scope="module")
def replicas(triton, repository, tmp_path_factory):
    second = start_triton(repository, tmp_path_factory.mktemp("replica") / "triton.log")
    try:
        yield [triton, second]
    finally:
        second.stop()


def _counts(replicas) -> list[int]:
    out = []
    for srv in replicas:
        api = RepositoryAPI(srv.http_url)
        out.append(api.counts(INSPECT_MODEL).inference_count)
        api.close()
    return out


def _delta(replicas, before, expected) -> list[int]:
    """Per-replica request counts since ``before``; Triton updates its statistics just after
    answering, so wait until all ``expected`` requests are counted."""
    delta: list[int] = []

    def counted():
        nonlocal delta
        delta = [a - b for a, b in zip(_counts(replicas), before)]
        return sum(delta) >= expected
    wait_for(counted, 10, 0.1, "statistics")
    return delta


def _target(replicas) -> str:
    return "ipv4:" + ",".join(s.grpc_url for s in replicas)  # both replicas, as DNS would list them


async def test_gateway_client_round_robin_spreads_requests(replicas):
    image = encode(render_board(3).image)
    for policy, spread in (("round_robin", True), ("", False)):
        before = _counts(replicas)
        svc = TritonService(_target(replicas), 30, policy)
        try:
            for _ in range(12):
                await svc.inspect(image)
        finally:
            await svc.close()
        delta = _delta(replicas, before, 12)
        assert sum(delta) == 12
        assert (min(delta) >= 1) if spread else (0 in delta), (policy, delta)


def test_worker_client_round_robin_spreads_batches(replicas):
    before = _counts(replicas)
    tb = SyncTriton(_target(replicas), lb_policy="round_robin")
    images = [encode(render_board(10 + i).image) for i in range(4)]
    for _ in range(4):
        assert not any(isinstance(r, Exception) for r in tb.inspect_many(images))
    delta = _delta(replicas, before, 16)
    assert sum(delta) == 16 and min(delta) >= 1, delta  # both replicas served (one would be pinned)

"""Starting the CPU Triton server on ports chosen for it: a port taken by someone else
between the choice and the server's bind costs a retry, not a failed test run; an
explicit port is never silently replaced; a failure shows the server's own words."""

from __future__ import annotations

import socket

import pytest

from serving.cpu_server import TritonServer, free_port, free_ports


def _listen(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("0.0.0.0", port))
    s.listen()
    return s


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    low, _ = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    ports = [free_port() for _ in range(50)] + list(free_ports().values())
    assert len(set(ports)) == len(ports)
    assert all(p < low for p in ports)
    for p in ports[:5]:
        _listen(p).close()


def test_a_port_lost_before_the_bind_is_chosen_again(tmp_path):
    srv = TritonServer(repository=tmp_path, load=[], log_file=tmp_path / "triton.log")
    taken = srv.ports["grpc"]
    with _listen(taken):
        with srv.start(timeout=60):
            assert srv.ports["grpc"] != taken
            assert "already in use" in (tmp_path / "triton.log").read_text()


def test_an_explicit_port_in_use_fails_with_the_servers_words(tmp_path):
    ports = free_ports()
    with _listen(ports["http"]):
        srv = TritonServer(repository=tmp_path, ports=ports, load=[], log_file=tmp_path / "triton.log")
        with pytest.raises(RuntimeError, match="already in use"):
            srv.start(timeout=60)
        assert srv.ports == ports

"""gRPC channel options shared by both transports."""

from __future__ import annotations

INT32_MAX = 2**31 - 1


def channel_args(lb_policy: str | None = None) -> list[tuple[str, object]]:
    """Reconnects are quick (100 ms first, 0.5 s at most, +-20 % jitter): gRPC's default
    backoff (1 s, then growing) left the gateway answering 503 for 1.5 s after Triton was
    back, and a 1 s ceiling still cost up to 1.3 s (measured 0.2-1.0 s); a refused connect
    to a dead Triton every half second costs nothing. With
    ``lb_policy="round_robin"`` and a target naming every replica (``dns:///triton-pods:8001``
    for a headless Service, ``ipv4:10.0.0.5:8001,10.0.0.6:8001``), every request picks the
    next replica, where one long-lived connection through a ClusterIP Service would pin a
    client to one replica. tritonclient's message-size limits are restated here, because
    passing options replaces them."""
    args: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", INT32_MAX), ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500)]
    if lb_policy:
        args.append(("grpc.lb_policy_name", lb_policy))
    return args

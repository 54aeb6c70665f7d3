"""Triton's admin APIs behind a key: the one list of restricted APIs the compose file, the
Kubernetes manifests and the restricted-API test on a real Triton agree on, and the check of
the two flags that carry it."""

from __future__ import annotations

# Triton's spelling ("Limit endpoint access" in its docs):
#   --http-restricted-api=<api>,<api>,...:<header>=<value>
#   --grpc-restricted-protocol=<protocol>,<protocol>,...:<header>=<value>
# with the same names on both endpoints. These change what Triton serves or runs (loading a
# python model runs its code); inference, health, metadata and statistics stay open
RESTRICTED_APIS = ("model-repository", "shared-memory", "model-config", "trace", "logging")
HEADER = "triton-admin-key"


def assert_restricted_api_flags(args: list[str]) -> str:
    """Both flags present once, restricting exactly ``RESTRICTED_APIS`` behind one header;
    the key's value (an env reference in the manifests) is returned for the caller to check."""
    keys = set()
    for prefix in ("--http-restricted-api=", "--grpc-restricted-protocol="):
        flags = [a for a in args if a.startswith(prefix)]
        assert len(flags) == 1, (prefix, flags)
        apis, sep, key = flags[0].removeprefix(prefix).partition(":")
        assert sep and sorted(apis.split(",")) == sorted(RESTRICTED_APIS), (prefix, apis)
        header, _, value = key.partition("=")
        assert header == HEADER and value, key
        keys.add(value)
    assert len(keys) == 1, keys  # one key for both endpoints
    return keys.pop()

"""Running Triton: the CPU server from the PyPI bundle, and the admin tools (model
repository versions, load/unload/promote through Triton's repository API)."""

"""Running Triton: the CPU server from the PyPI bundle, the repository's versions and configs
on disk (``repository.py``, which export writes through), the generated models' templates,
the onnxruntime adapter, CPU priority for background models, and hot-swap admin over the
contract's repository API. May import ``pcb``, ``enhance``, ``inference``."""

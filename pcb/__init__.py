"""PCB inspection domain logic: taxonomy, letterbox, NMS, verdicts. Pure numpy/OpenCV, no I/O
beyond reading the taxonomy file; imported by Triton models, the gateway, edges and tests."""

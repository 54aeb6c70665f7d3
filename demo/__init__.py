"""``make demo``: a whole inspection line on this machine (``python -m demo.line``): the CPU
Triton server, the gateway on its embedded defaults, two simulated Pi edges, then a batch
re-inspection of what the line archived. May import everything; nothing imports it."""

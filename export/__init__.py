"""Training and export: synthetic boards, the demo detector, and export targets that write
new model versions into a Triton model repository (one small module per target), through
``serving.repository``. May import ``pcb``, ``enhance``, ``serving``; torch and ultralytics
live only here."""

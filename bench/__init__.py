"""Benchmarks (``make bench``): measured side by side in one run, written to
docs/benchmarks.md. Never timed assertions in tests."""

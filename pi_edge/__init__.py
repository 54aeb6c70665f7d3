"""Raspberry Pi edge client (issue 5)."""

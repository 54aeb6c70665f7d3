"""FastAPI gateway (issue 4)."""

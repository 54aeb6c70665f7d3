"""The settings every process of the platform shares: one pydantic-settings class
(``environment.py``) read by the gateway, the batch engine's workers and CLI, and the
store's migrations, so a knob has one name and one default wherever it is read.

Its own package, below all three: a batch worker or a migration reads ``DATABASE_URL``
without importing the gateway. May import: pydantic-settings, ``pcb`` (the image limits
the defaults come from); nothing else of the platform."""

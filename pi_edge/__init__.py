"""The Raspberry Pi edge client: capture, trigger (board identity), sender (retries, spool
replay, heartbeats), spool, GPIO driver. May import only ``pcb``: it runs on the Pi with
nothing else of the platform installed."""

"""``python -m pi_edge [--config edge.yaml] [--simulate]`` - the edge client.

``--simulate`` runs both cameras of a line in one process against the gateway: the left
edge (Pi 1, GPIO on gpiozero's mock pins, each pulse printed) and the right edge (Pi 2),
over the same synthetic board sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import signal
import sys
from pathlib import Path

from pi_edge.config import EdgeConfig, load_config
from pi_edge.edge import Edge


def setup_logging(log_dir: str, name: str) -> None:
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    rotating = logging.handlers.RotatingFileHandler(Path(log_dir) / f"{name}.log", maxBytes=5 << 20, backupCount=5)
    rotating.setFormatter(fmt)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [rotating, console]
    root.setLevel(logging.INFO)


async def _run(edges: list[Edge], boards: int | None) -> None:
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(e.run(boards)) for e in edges]

    def stop() -> None:  # SIGTERM/SIGINT: stop capturing, pins low (Edge.close), exit
        for t in tasks:
            t.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pi_edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file (see pi_edge/edge.example.yaml)")
    ap.add_argument("--simulate", action="store_true", help="both edges of a line on synthetic boards")
    ap.add_argument("--boards", type=int, default=None, help="stop after this many boards")
    ap.add_argument("--left-key", help="--simulate: API key of the left device")
    ap.add_argument("--right-key", help="--simulate: API key of the right device")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    if args.simulate:
        base = cfg.model_dump()
        left = EdgeConfig.model_validate({**base, "device_id": base["device_id"] if base["side"] == "left" else "pi-1-left",
                                          "side": "left", "drives_gpio": True, "source": "synthetic",
                                          "gpio_driver": "mock", "api_key": args.left_key or cfg.api_key,
                                          "spool_dir": f"{cfg.spool_dir}/left"})
        right = EdgeConfig.model_validate({**base, "device_id": "pi-2-right", "side": "right", "drives_gpio": False,
                                           "source": "synthetic", "api_key": args.right_key or "",
                                           "spool_dir": f"{cfg.spool_dir}/right"})
        configs = [left, right]
    else:
        configs = [cfg]
    setup_logging(cfg.log_dir, "pi_edge" if not args.simulate else "pi_edge_sim")
    # no fixed session, simulated or not: each start asks the gateway for a fresh one
    edges = [Edge(c) for c in configs]
    try:
        asyncio.run(_run(edges, args.boards))
    finally:
        for e in edges:
            e.close()  # pins low on every exit path
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

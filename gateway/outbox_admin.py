"""The outbox's quarantine from a shell (the gateway's admin routes do the same over HTTP):
rows the database kept refusing, kept in the local outbox file of one gateway machine.

    python -m gateway.outbox_admin --outbox build/outbox.db list
    python -m gateway.outbox_admin --outbox build/outbox.db retry [ID ...]
"""

from __future__ import annotations

import argparse
import json

from gateway.services.outbox import Outbox
from settings.environment import get_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.outbox_admin", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outbox", default=get_settings().outbox_path)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="quarantined rows, oldest first (JSON lines)")
    retry = sub.add_parser("retry", help="send rows back to the outbox (all when no id is given)")
    retry.add_argument("ids", nargs="*")
    args = ap.parse_args(argv)
    box = Outbox(args.outbox)
    if args.cmd == "list":
        for row in box.quarantined(10_000):
            print(json.dumps({k: row[k] for k in ("id", "kind", "attempts", "last_error", "quarantined_at")}))
        return 0
    print(f"{box.requeue(args.ids or None)} rows sent back to the outbox")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

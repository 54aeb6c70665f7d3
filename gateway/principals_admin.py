"""Principals (API keys with a role) from a shell, straight in the gateway's database (the
admin API does the same over HTTP: ``/admin/principals``).

    python -m gateway.principals_admin create --name winforms --role viewer   # prints the key once
    python -m gateway.principals_admin list
    python -m gateway.principals_admin revoke ID
"""

from __future__ import annotations

import argparse

from gateway.services.principals import ROLES, PrincipalRegistry
from settings.environment import get_settings
from store.migrate import upgrade
from store.session import make_engine, make_sessionmaker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.principals_admin", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default=get_settings().database_url)
    sub = ap.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="a new key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    sub.add_parser("list", help="every principal (never a key)")
    revoke = sub.add_parser("revoke", help="disable a key")
    revoke.add_argument("id")
    args = ap.parse_args(argv)
    upgrade(args.database_url)
    registry = PrincipalRegistry(make_sessionmaker(make_engine(args.database_url)))
    if args.cmd == "create":
        info, key = registry.create(args.name, args.role)
        print(f"{info.id} {info.role} {info.name}\nkey (shown once): {key}")
    elif args.cmd == "list":
        registry.refresh()
        for p in registry.all():
            print(f"{p.id}  {p.role:<8}  {'enabled' if p.enabled else 'revoked':<8}  {p.name}")
    elif not registry.revoke(args.id):
        print(f"no principal {args.id}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

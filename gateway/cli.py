"""`supportbot tenants create|list|set` and `supportbot keys create|list|revoke|rotate`.

A new key is printed once, alone on the last line of stdout (scripts take `| tail -n1`); only its SHA-256 is
stored. Unknown tenants and keys are errors (exit 2) that say what to run instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import storage
from gateway.access import Role
from gateway.tenants import MAX_GRACE_S, create_key, create_tenant_with_key, list_keys, list_tenants, revoke_key_id, \
    rotate_key
from supportbot.cli import CliError, existing_database
from supportbot.errors import SupportbotError
from supportbot.settings import GatewaySettings

T = TypeVar("T")


def _run(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """`work` on the system's database (which must exist); its refusals become the CLI's errors."""
    from supportbot.db import open_database, session_factory

    url = existing_database(GatewaySettings().resolved_database_url)

    async def run() -> T:
        engine = open_database(url)
        try:
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (ValueError, SupportbotError) as exc:
        raise CliError(str(exc)) from exc


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def _revocation(row: storage.ApiKey, now: datetime) -> str:
    if row.revoked_at is None:
        return "-"
    return _when(row.revoked_at) + (" (grace)" if row.revoked_at > now else "")


def _refresh_note() -> str:
    fresh = GatewaySettings().auth_cache_fresh_s
    return f"every gateway refuses it within {fresh:g} s (AUTH_CACHE_FRESH_S)"


def cmd_tenants_create(args: argparse.Namespace) -> int:
    issued = _run(lambda sessions: create_tenant_with_key(sessions, tenant_id=args.tenant, name=args.name,
                                                          keep_originals=args.keep_originals))
    print(f"created tenant {issued.tenant_id}" + (" (keeps encrypted originals)" if args.keep_originals else "")
          + f"; its first key, admin key {issued.key_id}, is shown only this once:")
    print(issued.key)
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    rows = _run(list_tenants)
    if args.json:
        print(json.dumps([{"id": t.id, "name": t.name, "created_at": t.created_at.isoformat(),
                           "keep_originals": t.keep_originals, "active_keys": keys} for t, keys in rows]))
        return 0
    print(f"{'TENANT':<24} {'NAME':<24} {'CREATED':<20} {'KEYS':>4}  ORIGINALS")
    for tenant, keys in rows:
        print(f"{tenant.id:<24} {tenant.name[:24]:<24} {_when(tenant.created_at):<20} {keys:>4}  "
              f"{'kept, encrypted' if tenant.keep_originals else 'not kept'}")
    return 0


def cmd_tenants_set(args: argparse.Namespace) -> int:
    keep = args.keep_originals == "on"

    async def change(sessions: async_sessionmaker[AsyncSession]) -> None:
        from supportbot.db import transaction

        async with transaction(sessions) as session:
            tenant = await storage.get_tenant(session, tenant_id=args.tenant)
            if tenant is None:
                raise CliError(f"unknown tenant {args.tenant!r}: `supportbot tenants list` shows them")
            tenant.keep_originals = keep

    _run(change)
    if keep:
        print(f"tenant {args.tenant} keeps the originals of redacted messages from now on, encrypted with the "
              "first of dialogue's TRANSCRIPT_KEYS (while it has none, dialogue keeps none and logs a warning)")
    else:
        print(f"tenant {args.tenant} keeps no originals from now on; those kept so far stay, encrypted, until "
              "their conversations are erased")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    issued = _run(lambda sessions: create_key(sessions, tenant_id=args.tenant, role=args.role, origins=args.origin))
    where = f" for {', '.join(issued.origins)}" if issued.origins else ""
    print(f"created {issued.role.value} key {issued.key_id} of tenant {issued.tenant_id}{where}; shown only this "
          "once:")
    print(issued.key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from supportbot.db import utcnow

    rows = _run(lambda sessions: list_keys(sessions, tenant_id=args.tenant))
    now = utcnow()
    if args.json:
        print(json.dumps([_key_json(row, now) for row in rows]))
        return 0
    print(f"{'KEY ID':<20}  {'PREFIX':<10}  {'ROLE':<6}  {'CREATED':<20}  {'LAST USED':<20}  {'REVOKED':<28}  ORIGINS")
    for row in rows:
        print(f"{row.key_id:<20}  {row.prefix:<10}  {row.role:<6}  {_when(row.created_at):<20}  "
              f"{_when(row.last_used_at) if row.last_used_at else 'never':<20}  {_revocation(row, now):<28}  "
              f"{' '.join(storage.key_origins(row)) or '-'}")
    return 0


def _key_json(row: storage.ApiKey, now: datetime) -> dict[str, Any]:
    return {"key_id": row.key_id, "prefix": row.prefix, "role": row.role, "origins": list(storage.key_origins(row)),
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            "active": row.revoked_at is None or row.revoked_at > now}


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    if _run(lambda sessions: revoke_key_id(sessions, key_id=args.key_id)):
        print(f"revoked key {args.key_id}: {_refresh_note()}")
    else:
        print(f"key {args.key_id} was revoked already")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    issued = _run(lambda sessions: rotate_key(sessions, key_id=args.key_id, grace_s=args.grace))
    old = (f"the old key {args.key_id} is revoked: {_refresh_note()}" if not args.grace else
           f"the old key {args.key_id} keeps working for {args.grace:g} s more, then is refused")
    print(f"new {issued.role.value} key {issued.key_id} of tenant {issued.tenant_id}; {old}. The new key is shown "
          "only this once:")
    print(issued.key)
    return 0


def _grace(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {value!r}") from None
    if not 0 <= number <= MAX_GRACE_S:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_GRACE_S} seconds (7 days), not {value}")
    return number


def add_commands(commands: Any) -> None:
    """Add `tenants` and `keys` to the `supportbot` command's subparsers."""
    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    create = tenants.add_parser("create", help="create a tenant and print its first key, an admin key, once")
    create.add_argument("tenant", help="short slug, e.g. acme")
    create.add_argument("--name", default=None)
    create.add_argument("--keep-originals", action="store_true",
                        help="also keep each message's original text, encrypted, readable by admin keys only")
    create.set_defaults(func=cmd_tenants_create)
    listing = tenants.add_parser("list", help="every tenant with its number of active keys")
    listing.add_argument("--json", action="store_true", help="one JSON array on stdout")
    listing.set_defaults(func=cmd_tenants_list)
    change = tenants.add_parser("set", help="change a tenant's settings")
    change.add_argument("tenant")
    change.add_argument("--keep-originals", choices=["on", "off"], required=True,
                        help="keep each new message's original text too, encrypted, readable by admin keys only")
    change.set_defaults(func=cmd_tenants_set)

    keys = commands.add_parser("keys", help="a tenant's API keys").add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="create a key and print it once, alone on the last line")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument("--role", required=True, choices=[role.value for role in Role],
                            help="admin: everything of the tenant; api: server-side calls; agent: read the "
                                 "conversations; widget: a web page's, public by design, only from --origin")
    key_create.add_argument("--origin", action="append", default=[], metavar="URL",
                            help="widget keys (required, repeatable): a site whose pages may use the key, "
                                 "https://host[:port] (http:// only for localhost)")
    key_create.set_defaults(func=cmd_keys_create)
    key_list = keys.add_parser("list", help="a tenant's keys: id, prefix, role, created, last used, revoked, "
                                            "origins (never the keys)")
    key_list.add_argument("--tenant", required=True)
    key_list.add_argument("--json", action="store_true", help="one JSON array on stdout")
    key_list.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key: refused by every gateway within AUTH_CACHE_FRESH_S")
    revoke.add_argument("key_id", help="key_... (from `keys list`)")
    revoke.set_defaults(func=cmd_keys_revoke)
    rotate = keys.add_parser("rotate", help="a new key with the same role and origins; the old one is revoked")
    rotate.add_argument("key_id", help="key_... (from `keys list`)")
    rotate.add_argument("--grace", type=_grace, default=0.0, metavar="SECONDS",
                        help="keep the old key working this long (at most 7 days) while pages and clients switch "
                             "over (default 0: revoked now)")
    rotate.set_defaults(func=cmd_keys_rotate)

"""`audit-service`: the one console script (api, worker, migrate, tenants, keys, retention, verify)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from . import chain, config, db, store
from .models import dumps


def _connect(settings: config.Settings) -> Callable[[], Awaitable[asyncpg.Connection]]:
    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            settings.database_url,
            server_settings={"application_name": "audit-cli", "TimeZone": "UTC"},
            timeout=settings.api_timeout,
        )

    return connect


def _run_db(settings: config.Settings, action: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        conn = await _connect(settings)()
        try:
            return await action(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def cmd_api(settings: config.Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if settings.api_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes: metrics are merged from files in a private directory.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="audit-api-metrics-")
    uvicorn.run(
        "audit_service.api:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,
        timeout_keep_alive=max(5, int(settings.api_timeout)),
        proxy_headers=True,
        # X-Forwarded-For names the client only when nginx sent it: from anyone else it is ignored.
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


def cmd_worker(settings: config.Settings, args: argparse.Namespace) -> int:
    from . import worker

    worker.main(settings)
    return 0


def cmd_migrate(settings: config.Settings, args: argparse.Namespace) -> int:
    applied = _run_db(settings, lambda c: db.migrate(c, settings.partition_months_ahead))
    print(dumps({"applied": applied, "changed": bool(applied)}).decode())
    return 0


def cmd_create_tenant(settings: config.Settings, args: argparse.Namespace) -> int:
    tenant_id = _run_db(settings, lambda c: store.create_tenant(c, args.name))
    print(dumps({"tenant_id": tenant_id, "name": args.name.strip()}).decode())
    return 0


def cmd_create_api_key(settings: config.Settings, args: argparse.Namespace) -> int:
    async def action(conn: asyncpg.Connection) -> tuple[Any, tuple[Any, str]]:
        tenant = await store.find_tenant(conn, args.tenant)
        if tenant is None:
            raise LookupError(f"no tenant named or numbered {args.tenant!r}")
        return tenant, await store.create_api_key(conn, tenant["id"])

    tenant, (key_id, key) = _run_db(settings, action)
    # The key is shown this once; only its hash is stored. Its id is the principal of its events.
    out = {"tenant_id": tenant["id"], "tenant": tenant["name"], "key_id": key_id, "api_key": key}
    print(dumps(out).decode())
    return 0


def cmd_retention(settings: config.Settings, args: argparse.Namespace) -> int:
    if args.days is not None and args.days < 1:
        raise ValueError(f"--days must be at least 1 (got {args.days})")
    days = args.days or settings.retention_days
    window = asyncio.run(_replay_window_seconds(settings))
    if window is None:
        print("audit-service: warning: the stream's replay window could not be read", file=sys.stderr)
    elif days * 86400 < window:
        # A replay after a restore would bring back events that retention removed.
        raise ValueError(
            f"retention of {days} days is shorter than the stream's replay window "
            f"({window / 86400:g} days): raise RETENTION_DAYS or shorten the stream's max_age"
        )
    report = _run_db(settings, lambda c: db.retention(c, days, dry_run=args.dry_run))
    print(dumps(report).decode())
    return 0


async def _replay_window_seconds(settings: config.Settings) -> float | None:
    """The stream's max_age in seconds (inf: unlimited), or None when NATS cannot be asked."""
    from . import broker

    try:
        nc, js = await asyncio.wait_for(broker.connect(settings, "audit-cli"), 10)
    except Exception:  # noqa: BLE001 - reported by the caller
        return None
    try:
        info = await js.stream_info(settings.stream_name)
        return float(info.config.max_age or 0) or float("inf")
    except Exception:  # noqa: BLE001
        return None
    finally:
        await nc.close()


def _timestamp(option: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time with an offset, as the API's since/until take it."""
    if value is None:
        return None
    from pydantic import TypeAdapter, ValidationError

    from .models import Timestamp

    try:
        return TypeAdapter(Timestamp).validate_python(value)
    except ValidationError:
        raise ValueError(
            f"{option} must be an RFC 3339 date-time with an offset, like 2024-05-01T12:00:00Z "
            f"(got {value!r})"
        ) from None


def verify_view(tenant: Any, result: chain.VerifyResult) -> dict[str, Any]:
    """One tenant's line of `audit-service verify`: store.verify's result, the first invalid
    event named by id, seq and receipt time."""
    first = None
    if result.first_invalid is not None:
        first = {
            "event_id": result.first_invalid,
            "seq": result.invalid_seq,
            "created_at": chain.format_time(result.invalid_created_at) if result.invalid_created_at else None,
        }
    return {
        "tenant_id": str(tenant["id"]),
        "name": tenant["name"],
        "valid": result.valid,
        "checked": result.checked,
        "first_invalid": first,
        "problem": result.problem,
        "reason": result.reason,
    }


def verify_summary(tenants: list[dict[str, Any]]) -> dict[str, Any]:
    broken = [t for t in tenants if not t["valid"]]
    return {
        "tenants": len(tenants),
        "valid": len(tenants) - len(broken),
        "broken": len(broken),
        "events_checked": sum(t["checked"] for t in tenants),
        "broken_tenants": [t["tenant_id"] for t in broken],
    }


def cmd_verify(settings: config.Settings, args: argparse.Namespace) -> int:
    """Every tenant's chain (or one's) recomputed as GET /api/v1/audit/verify does, one tenant
    after the other on one connection, each streamed in batches (store.verify). Exit code 0 when
    every chain verifies, 1 when one is broken (the report says which, and where)."""
    since, until = _timestamp("--since", args.since), _timestamp("--until", args.until)

    async def go() -> dict[str, Any]:
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=1,
            timeout=settings.api_timeout,
            server_settings={"application_name": "audit-cli", "TimeZone": "UTC"},
        )
        try:
            if args.tenant is not None:
                async with pool.acquire() as conn:
                    tenant = await store.find_tenant(conn, args.tenant)
                if tenant is None:
                    raise LookupError(f"no tenant named or numbered {args.tenant!r}")
                tenants = [tenant]
            else:
                tenants = await pool.fetch("SELECT id, name FROM tenants ORDER BY name")
            results = [verify_view(t, await store.verify(pool, t["id"], since, until)) for t in tenants]
        finally:
            await pool.close()
        return {
            "valid": all(r["valid"] for r in results),
            "since": chain.format_time(since) if since else None,
            "until": chain.format_time(until) if until else None,
            "tenants": results,
            "summary": verify_summary(results),
        }

    report = asyncio.run(go())
    print(dumps(report).decode())
    return 0 if report["valid"] else 1


def cmd_replay(settings: config.Settings, args: argparse.Namespace) -> int:
    from . import jsonlog, worker

    if args.from_seq is not None and args.from_seq < 1:
        raise ValueError(f"--from-seq must be at least 1 (got {args.from_seq})")
    jsonlog.setup(settings.log_level, "audit-replay", sys.stderr)  # stdout carries the report
    report = asyncio.run(worker.Worker(settings).replay(args.from_seq))
    print(dumps(report).decode())
    return 0


def cmd_dead_letters(settings: config.Settings, args: argparse.Namespace) -> int:
    """List the dead letters, or re-drive some into the stream (each row goes once it is acked)."""
    from . import broker

    ids = None if args.all else args.redrive

    async def go() -> dict[str, Any]:
        conn = await _connect(settings)()
        try:
            rows = await store.dead_letters(conn, ids if args.redrive or args.all else None)
            if not (args.redrive or args.all):
                return {"count": len(rows), "dead_letters": [_dead_letter_view(r) for r in rows]}
            missing = sorted(set(ids or []) - {r["id"] for r in rows})
            if missing:
                raise LookupError(f"no dead letter with id {', '.join(map(str, missing))}")
            nc, js = await broker.connect(settings, "audit-cli")
            redriven = []
            try:
                for r in rows:
                    seq = await broker.republish(js, settings, r["subject"], r["data"], f"redrive-{r['id']}")
                    await store.remove_dead_letter(conn, r["id"])
                    redriven.append({"id": r["id"], "old_stream_seq": r["stream_seq"], "stream_seq": seq})
            finally:
                await nc.close()
            return {"redriven": redriven, "changed": bool(redriven)}
        finally:
            await conn.close()

    print(dumps(asyncio.run(go())).decode())
    return 0


def _dead_letter_view(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "stream_seq", "subject", "msg_id", "error", "deliveries", "created_at")}
    out["bytes"] = len(row["data"])
    out["data"] = bytes(row["data"][:2048]).decode("utf-8", "replace")
    return out


def cmd_check_config(settings: config.Settings, args: argparse.Namespace) -> int:
    print(dumps(settings.safe_summary()).decode())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audit-service", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)
    sub.add_parser("worker", help="move events from JetStream into PostgreSQL").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(func=cmd_migrate)
    t = sub.add_parser("create-tenant", help="create a tenant")
    t.add_argument("name")
    t.set_defaults(func=cmd_create_tenant)
    k = sub.add_parser("create-api-key", help="create an API key for a tenant (printed once)")
    k.add_argument("tenant", help="tenant name or id")
    k.set_defaults(func=cmd_create_api_key)
    r = sub.add_parser("retention", help="remove events older than RETENTION_DAYS")
    r.add_argument("--days", type=int, help="override RETENTION_DAYS")
    r.add_argument("--dry-run", action="store_true", help="report what would be removed")
    r.set_defaults(func=cmd_retention)
    v = sub.add_parser(
        "verify",
        help="recompute every tenant's hash chain (JSON report; exit code 1 when one is broken)",
        description="Recompute each tenant's hash chain, one tenant after the other, as "
        "GET /api/v1/audit/verify does, and print a JSON report: per tenant whether it verifies, the "
        "events checked and the first invalid event (id, seq, created_at, the problem); a summary. "
        "Exit code 0 when every chain verifies, 1 when one is broken or on an error (then stderr says "
        "why and nothing is printed on stdout), 2 on a configuration error.",
    )
    v.add_argument("--tenant", help="only this tenant (its id or name)")
    v.add_argument("--since", help="only the events received from this RFC 3339 time on")
    v.add_argument("--until", help="only the events received before this RFC 3339 time")
    v.set_defaults(func=cmd_verify)
    rp = sub.add_parser("replay", help="store the stream's events again (catch up a restored database)")
    rp.add_argument("--from-seq", type=int, help="first stream sequence (default: the stream's first)")
    rp.set_defaults(func=cmd_replay)
    d = sub.add_parser(
        "dead-letters", help="list the messages the worker could not store, or re-drive them into the stream"
    )
    d.add_argument("--redrive", type=int, nargs="+", metavar="ID", help="re-drive these dead letters")
    d.add_argument("--all", action="store_true", help="re-drive every dead letter")
    d.set_defaults(func=cmd_dead_letters)
    sub.add_parser(
        "check-config", help="validate the environment and print it (secrets masked)"
    ).set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = config.load()
        return args.func(settings, args)
    except config.ConfigError as exc:
        print(f"audit-service: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, LookupError) as exc:
        print(f"audit-service: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"audit-service: database error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

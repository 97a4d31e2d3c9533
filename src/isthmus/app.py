"""``create_app()``: the one place where every part is wired together.

The returned ASGI app dispatches relay paths itself (no framework on the hot path), mounts the
admin API (FastAPI) under ``/api`` and serves health, metrics and the console.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from isthmus.config import FileConfig, Settings, load_config
from isthmus.errors import ConfigError, NotFoundError
from isthmus.ir import Protocol
from isthmus.metrics import Metrics
from isthmus.relay import wire
from isthmus.relay.asgi import ASGIApp, Receive, Scope, Send, send_bytes
from isthmus.relay.doors import resolve_post, resolve_response_resource, split_prefix
from isthmus.relay.pipeline import Relay

log = logging.getLogger("isthmus")

_MODEL_LIST_PATHS = frozenset({"/v1/models", "/models", "/v1beta/models", "/v1alpha/models"})
_STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Runtime:
    """Everything built at start-up; torn down in reverse at shutdown."""

    relay: Relay
    admin: ASGIApp
    ready: Callable[[], Awaitable[tuple[bool, str]]]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class IsthmusApp:
    def __init__(self, settings: Settings, file_config: FileConfig | None) -> None:
        self.settings = settings
        self.file_config = file_config
        self.metrics = Metrics()
        self.runtime: Runtime | None = None
        self.started_at = time.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.runtime = await _start_runtime(self.settings, self.file_config, self.metrics)
                except Exception as exc:
                    log.error("start-up failed: %s", exc, exc_info=not isinstance(exc, ConfigError))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    for close in reversed(self.runtime.closers):
                        try:
                            await close()
                        except Exception:
                            log.exception("error during shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        if runtime is None:
            await send_bytes(send, 503, b'{"error":{"message":"starting up"}}', [])
            return
        method: str = scope["method"]
        path, hint = split_prefix(scope["path"])
        if method == "POST":
            door = resolve_post(path)
            if door is not None:
                self.metrics.in_flight += 1
                try:
                    await runtime.relay.handle(scope, receive, send, door)
                finally:
                    self.metrics.in_flight -= 1
                return
        elif method == "GET" or method == "DELETE":
            if method == "GET" and path in _MODEL_LIST_PATHS:
                await runtime.relay.list_models(scope, send, path, hint)
                return
            door = resolve_response_resource(method, path)
            if door is not None:
                await runtime.relay.handle(scope, receive, send, door)
                return
        raw_path: str = scope["path"]
        if raw_path == "/api" or raw_path.startswith("/api/"):
            child = dict(scope)
            child["root_path"] = scope.get("root_path", "") + "/api"
            child["path"] = raw_path[4:] or "/"
            child["raw_path"] = child["path"].encode()
            await runtime.admin(child, receive, send)
            return
        if raw_path == "/healthz":
            await send_bytes(send, 200, b'{"status":"ok"}', [])
            return
        if raw_path == "/readyz":
            ok, detail = await runtime.ready()
            body = orjson.dumps({"status": "ready" if ok else "not ready", "detail": detail})
            await send_bytes(send, 200 if ok else 503, body, [])
            return
        if raw_path == "/metrics" and method == "GET":
            await send_bytes(send, 200, self.metrics.render(), [], b"text/plain; version=0.0.4")
            return
        if method in ("GET", "HEAD") and not raw_path.startswith(("/v1", "/openai", "/anthropic", "/gemini")):
            await self._console(scope, send, raw_path, method)
            return
        protocol = hint or (Protocol.GEMINI if "/models/" in path and ":" in path else Protocol.OPENAI_CHAT)
        err = NotFoundError(f"no such endpoint: {method} {raw_path}")
        await send_bytes(send, 404, wire.error_body(protocol, err), [])

    async def _console(self, scope: Scope, send: Send, path: str, method: str) -> None:
        """The web console: static files with an index.html fallback for client-side routes."""
        root = _STATIC_DIR.resolve()
        candidate = (root / path.lstrip("/")).resolve() if path != "/" else root / "index.html"
        if not candidate.is_relative_to(root) or not candidate.is_file():
            candidate = root / "index.html"
        if not candidate.is_file():
            body = b"Isthmus is running. The web console is not built; the admin API is at /api/docs.\n"
            await send_bytes(send, 200, b"" if method == "HEAD" else body, [], b"text/plain; charset=utf-8")
            return
        data = candidate.read_bytes()
        ctype = _CONTENT_TYPES.get(candidate.suffix, b"application/octet-stream")
        await send_bytes(send, 200, b"" if method == "HEAD" else data, [], ctype)


_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".json": b"application/json",
    ".ico": b"image/x-icon",
}


async def _start_runtime(settings: Settings, file_config: FileConfig | None, metrics: Metrics) -> Runtime:
    """Open the store, apply the config file, load the snapshot and build the request path."""
    from isthmus.accounting import Accountant, builtin_prices
    from isthmus.accounting.retention import RetentionPolicy, RetentionTask
    from isthmus.accounting.rollups import load_spend_totals
    from isthmus.accounting.writer import UsageWriter
    from isthmus.admin import AdminServices, ensure_first_admin
    from isthmus.crypto import SecretBox, load_or_create_secret_key
    from isthmus.invalidation import SnapshotInvalidator
    from isthmus.providers.h1 import H1Pool
    from isthmus.providers.http import new_client_session
    from isthmus.providers.registry import build_providers
    from isthmus.relay.billing import Billing
    from isthmus.relay.responses_state import ResponsesState
    from isthmus.relay.state import GatewayState, StateHolder, build_state
    from isthmus.routing.affinity import AffinityCache
    from isthmus.routing.health import MemoryHealth
    from isthmus.routing.router import Router
    from isthmus.store.canary import verify_secret_key
    from isthmus.store.config_sync import apply_file_config
    from isthmus.store.db import create_engine, session_factory
    from isthmus.store.migrations import is_up_to_date, upgrade_database
    from isthmus.store.snapshot import SnapshotRows, load_snapshot_rows

    closers: list[Callable[[], Awaitable[None]]] = []
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    box = SecretBox(load_or_create_secret_key(settings.data_dir, settings.secret_key))
    url = settings.resolved_database_url(file_config.database_url if file_config else None)
    await upgrade_database(url)
    # Every SQLite transaction takes the write lock up front: a read that turns into a write (a console
    # session touch) would otherwise fail at once with "database is locked" while the usage writer
    # holds the lock, instead of waiting its turn.
    engine = create_engine(url, sqlite_immediate=True)
    closers.append(engine.dispose)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        await verify_secret_key(session, box)
    if file_config is not None:
        async with sessions.begin() as session:
            report = await apply_file_config(session, file_config, box)
        for name, secret in report.generated_secrets.items():
            _announce(f"gateway key {name!r} was created; its secret is shown once: {secret}")
    created = await ensure_first_admin(sessions, settings.admin_username, settings.admin_password)
    if created is not None and not settings.admin_password:
        _announce(f"admin user {created[0]!r} was created with password: {created[1]}")

    health = MemoryHealth()
    affinity = AffinityCache(ttl_s=file_config.cache_affinity_seconds if file_config else 300.0)
    scheduling = file_config.scheduling if file_config else "provider_priority"
    max_attempts = file_config.max_attempts if file_config else 3
    log_detail = file_config.log_detail if file_config else "base"
    builtin = builtin_prices()
    redis_url = settings.redis_url or (file_config.redis_url if file_config else None)
    redis = None
    if redis_url:
        import redis.asyncio as aioredis  # only where configured: the client costs ~15 MiB

        redis = aioredis.from_url(redis_url)
        closers.append(redis.aclose)

    async def load_rows() -> SnapshotRows:
        async with sessions() as session:
            return await load_snapshot_rows(session, box)

    def build(rows: SnapshotRows, previous: Router | None) -> GatewayState:
        return build_state(
            rows,
            previous=previous,
            health=health,
            affinity=affinity,
            scheduling=scheduling,
            max_attempts=max_attempts,
            log_detail=log_detail,
            builtin=builtin,
        )

    built_from = await load_rows()
    holder = StateHolder(build(built_from, None))
    accountant = Accountant.create(holder.current.prices, tz=settings.timezone, redis=redis)
    async with sessions() as session:
        spend = await load_spend_totals(session, ZoneInfo(settings.timezone))
    await accountant.budgets.load_spend(spend)

    async def reload_local() -> None:
        # The periodic reload nearly always finds nothing changed: keep the state in force then,
        # rather than rebuild every table (and drop the request path's warm caches) every 30 s.
        nonlocal built_from
        rows = await load_rows()
        if rows.same_content(built_from):
            return
        holder.swap(build(rows, holder.current.router))
        built_from = rows
        accountant.prices = holder.current.prices

    invalidator = SnapshotInvalidator(redis_url, reload_local)
    invalidator.start()
    closers.append(invalidator.close)

    async def reload() -> None:
        """After an admin change: rebuild here, then tell the other instances."""
        await reload_local()
        await invalidator.announce()

    http = new_client_session()
    closers.append(http.close)
    upstream_pool = H1Pool()
    closers.append(upstream_pool.aclose)
    providers = build_providers(upstream_pool)
    # The usage writer has a connection of its own: it never queues behind console queries for a
    # pooled one, and its large prepared batch INSERTs stay on that one connection.
    writer_engine = create_engine(url, pool_size=1, sqlite_immediate=True)
    closers.append(writer_engine.dispose)
    writer = UsageWriter(
        session_factory(writer_engine),
        settings.data_dir / "spool",
        spend_timezone=ZoneInfo(settings.timezone),
    )
    writer.start()
    closers.append(lambda: writer.stop(settings.shutdown_grace))
    retention = RetentionTask(
        sessions,
        RetentionPolicy(
            usage_days=settings.usage_retention_days, log_days=settings.request_log_retention_days
        ),
    )
    retention.start()
    closers.append(retention.stop)
    relay = Relay(
        holder,
        providers,
        Billing(accountant, writer, metrics),
        max_body_bytes=settings.max_body_bytes,
        responses=ResponsesState(sessions),
    )

    def health_statuses() -> list[dict[str, Any]]:
        reports = health.all_statuses(time.monotonic())
        return [dataclasses.asdict(report) for _, report in sorted(reports.items())]

    services = AdminServices(
        session_factory=sessions,
        box=box,
        settings=settings,
        on_change=reload,
        http=http,
        health_statuses=health_statuses,
    )
    admin = _LazyAdmin(services)

    async def ready() -> tuple[bool, str]:
        try:
            if not await is_up_to_date(engine):
                return False, "database migrations are not current"
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        return True, "ok"

    return Runtime(relay=relay, admin=admin, ready=ready, closers=closers)


class _LazyAdmin:
    """The admin API, built on its first request: the web framework behind it costs memory and
    start-up time a gateway that only relays should not pay."""

    def __init__(self, services: Any) -> None:
        self._services = services
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from isthmus.admin import create_admin_api

            self._app = create_admin_api(self._services)
        await self._app(scope, receive, send)


def _settle_heap() -> None:
    """Move everything start-up allocated (modules, snapshot, pools) out of the collector's sight and
    collect young objects less often: a full collection over that long-lived heap cost ~100 ms about
    once a second under load (~80 µs per request), for garbage a request path rarely makes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def _announce(line: str) -> None:
    """Shown once on the console (not through logging, whose scrubber would mask the secret)."""
    print(f"[isthmus] {line}", flush=True)


def create_app(settings: Settings | None = None, file_config: FileConfig | None = None) -> IsthmusApp:
    """Build the gateway. Reads the config file named by the settings unless one is given."""
    settings = settings or Settings()
    if file_config is None and settings.config is not None:
        file_config = load_config(settings.config)
    return IsthmusApp(settings, file_config)


def create_app_from_env() -> Any:
    """Factory for ``uvicorn --factory`` (each worker process builds its own app)."""
    return create_app()

"""The ``isthmus`` command: run the gateway, migrate, check a config file, and manage admins, keys and
providers directly in the database.

Database commands use the same database as the server (``ISTHMUS_DATABASE_URL``, else the config
file's ``database_url``, else SQLite in the data dir), apply pending migrations first, and go through
the admin services, so they follow the same rules as the admin API. A running gateway sees their
changes when it next rebuilds its snapshot.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.config import ConfigProblems, FileConfig, Settings, load_config
from isthmus.errors import IsthmusError
from isthmus.store.tables import utcnow

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# --- Settings and database ----------------------------------------------------------------------


@dataclass
class CliState:
    config_path: Path | None

    def settings(self, **overrides: Any) -> Settings:
        values = {k: v for k, v in overrides.items() if v is not None}
        if self.config_path is not None:
            values.setdefault("config", self.config_path)
        try:
            return Settings(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"ISTHMUS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise click.ClickException(f"invalid settings: {problems}") from None

    def file_config(self, settings: Settings) -> FileConfig | None:
        if settings.config is None:
            return None
        try:
            return load_config(settings.config)
        except ConfigProblems as exc:
            raise click.ClickException(str(exc)) from None

    def database_url(self, settings: Settings) -> str:
        file_config = self.file_config(settings)
        return settings.resolved_database_url(file_config.database_url if file_config else None)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_call(make))
    except IsthmusError as exc:
        raise click.ClickException(exc.message) from None


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def _with_database(url: str, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    from isthmus.store.db import create_engine, session_factory
    from isthmus.store.migrations import upgrade_database

    await upgrade_database(url)
    engine = create_engine(url, pool_size=2, sqlite_immediate=True)
    try:
        return await work(session_factory(engine))
    finally:
        await engine.dispose()


def _database_command(
    ctx: click.Context, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    state: CliState = ctx.obj
    url = state.database_url(state.settings())
    return _run(lambda: _with_database(url, work))


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``30d``/``12h``/``90m``/``2w`` from now, or an ISO date/time (no zone means UTC)."""
    now = now or utcnow()
    match = _DURATION.match(text.strip().lower())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + timedelta(**{_DURATION_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (30d, 12h, 90m, 2w) nor an ISO date/time"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=now.tzinfo)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


# --- Commands -------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The YAML config file (default: $ISTHMUS_CONFIG). Its database_url is used unless "
    "ISTHMUS_DATABASE_URL is set.",
)
@click.version_option(package_name="isthmus")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Isthmus, a self-hosted AI API gateway.

    Settings come from ISTHMUS_* environment variables (ISTHMUS_DATABASE_URL, ISTHMUS_DATA_DIR,
    ISTHMUS_SECRET_KEY, ...) and the optional config file.
    """
    ctx.obj = CliState(config_path)


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The YAML config file (overrides the global --config).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1, or server.host from the config).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default 8080).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (more than 1 needs Redis).")
@click.pass_context
def serve(
    ctx: click.Context, config_path: Path | None, host: str | None, port: int | None, workers: int | None
) -> None:
    """Run the gateway: the client APIs, the admin API under /api and the console at /.

    Migrations run at start-up. On a fresh database the first admin comes from
    ISTHMUS_ADMIN_USERNAME/ISTHMUS_ADMIN_PASSWORD, or is generated and printed once.
    """
    state: CliState = ctx.obj
    settings = state.settings(config=config_path, host=host, port=port, workers=workers)
    from isthmus.server import serve as run_server

    try:
        run_server(settings)
    except IsthmusError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending database migrations (the server also does this at start-up)."""
    from isthmus.store.migrations import current_revision, upgrade_database

    state: CliState = ctx.obj
    url = state.database_url(state.settings())

    async def work() -> str | None:
        await upgrade_database(url)
        return await current_revision(url)

    revision = _run(work)
    click.echo(f"database {_safe_url(url)} is at revision {revision}")


# --- config ---------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Work with config files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE, expanding ${VAR} from the environment, and list every problem with its path.

    Exits with status 1 when there are problems.
    """
    try:
        parsed = load_config(file)
    except ConfigProblems as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{file}: {len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    keys = sum(len(p.keys) for p in parsed.providers)
    click.echo(
        f"ok: {file}: {len(parsed.providers)} provider(s) with {keys} key(s), {len(parsed.models)} model(s), "
        f"{len(parsed.teams)} team(s), {len(parsed.users)} user(s), {len(parsed.keys)} gateway key(s)"
    )


# --- admin ----------------------------------------------------------------------------------------


@main.group()
def admin() -> None:
    """Manage console administrators."""


def _password_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help=help_text,
    )


@admin.command("create")
@click.argument("username")
@_password_option("The new admin's password (prompted for, hidden, when omitted).")
@click.pass_context
def admin_create(ctx: click.Context, username: str, password: str) -> None:
    """Create an admin user named USERNAME."""
    from isthmus.admin.schemas.tenancy import UserCreate
    from isthmus.admin.services import CLI_ACTOR, tenancy

    body = _validated(lambda: UserCreate(username=username, password=password, role="admin"))

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            await tenancy.create_user(session, CLI_ACTOR, body)

    _database_command(ctx, work)
    click.echo(f"created admin {username!r}")


@admin.command("set-password")
@click.argument("username")
@_password_option("The new password (prompted for, hidden, when omitted).")
@click.pass_context
def admin_set_password(ctx: click.Context, username: str, password: str) -> None:
    """Set USERNAME's password (for a lost admin password); their console sessions end."""
    from isthmus.admin.schemas.tenancy import PasswordSet
    from isthmus.admin.services import CLI_ACTOR, tenancy
    from isthmus.store import repos

    body = _validated(lambda: PasswordSet(password=password))

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            user = await repos.users.get_by_name(session, username)
            await tenancy.set_password(session, CLI_ACTOR, user.id, body.password)

    _database_command(ctx, work)
    click.echo(f"password of {username!r} set")


def _validated(build: Callable[[], T]) -> T:
    try:
        return build()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(problems) from None


# --- keys -----------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage gateway keys (what clients send as their API key)."""


@keys.command("create")
@click.argument("name")
@click.option("--user", "username", help="The user the key belongs to (by username).")
@click.option("--team", "team_name", help="The team the key belongs to (by name).")
@click.option("--models", help="Comma-separated model names the key may use (default: all).")
@click.option("--expires", help="Expiry: a duration from now (30d, 12h, 90m, 2w) or an ISO date/time.")
@click.pass_context
def keys_create(
    ctx: click.Context,
    name: str,
    username: str | None,
    team_name: str | None,
    models: str | None,
    expires: str | None,
) -> None:
    """Create a gateway key called NAME and print its secret, once."""
    from isthmus.admin.schemas.keys import KeyCreate
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import keys as key_service
    from isthmus.store import repos

    expires_at = parse_expiry(expires) if expires else None
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session, session.begin():
            user = await repos.users.get_by_name(session, username) if username else None
            team = await repos.teams.get_by_name(session, team_name) if team_name else None
            body = _validated(
                lambda: KeyCreate(
                    name=name,
                    user_id=user.id if user else None,
                    team_id=team.id if team else None,
                    allowed_models=allowed,
                    expires_at=expires_at,
                )
            )
            _key, secret = await key_service.create_key(session, CLI_ACTOR, body)
            return secret

    secret = _database_command(ctx, work)
    click.echo(f"created key {name!r}; its secret is shown only now:", err=True)
    click.echo(secret)


@keys.command("list")
@click.option("--user", "username", help="Only keys of this user (by username).")
@click.option(
    "--status", type=click.Choice(["active", "paused", "revoked", "expired"]), help="Only keys in this state."
)
@click.option("--name", help="Only keys whose name contains this text.")
@click.pass_context
def keys_list(ctx: click.Context, username: str | None, status: str | None, name: str | None) -> None:
    """List gateway keys (never their secrets)."""
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import keys as key_service
    from isthmus.store import repos

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[list[object]]:
        async with sessions() as session:
            user = await repos.users.get_by_name(session, username) if username else None
            rows: list[list[object]] = []
            offset = 0
            while True:
                page = await key_service.list_keys(
                    session,
                    CLI_ACTOR,
                    limit=500,
                    offset=offset,
                    name=name,
                    status=status,  # type: ignore[arg-type]
                    user_id=user.id if user else None,
                )
                for key in page.items:
                    state = (
                        "expired" if key_service.is_expired(key) and key.status == "active" else key.status
                    )
                    expires = key.expires_at.strftime("%Y-%m-%d %H:%M") if key.expires_at else None
                    models = ",".join(key.allowed_models) if key.allowed_models else "*"
                    rows.append([key.id, key.name, key.key_prefix, state, key.user_id, models, expires])
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    return rows

    rows = _database_command(ctx, work)
    if not rows:
        click.echo("no keys")
        return
    _table(["ID", "NAME", "PREFIX", "STATUS", "USER", "MODELS", "EXPIRES"], rows)


@keys.command("revoke")
@click.argument("name_or_id")
@click.pass_context
def keys_revoke(ctx: click.Context, name_or_id: str) -> None:
    """Revoke the key with this name (or numeric id). Permanent."""
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import keys as key_service

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session, session.begin():
            key = await key_service.find_key(session, CLI_ACTOR, name_or_id)
            await key_service.change_status(session, CLI_ACTOR, key.id, "revoke")
            return key.name

    revoked = _database_command(ctx, work)
    click.echo(f"revoked key {revoked!r}")


# --- providers ------------------------------------------------------------------------------------


@main.group()
def providers() -> None:
    """Look at upstream providers."""


@providers.command("list")
@click.pass_context
def providers_list(ctx: click.Context) -> None:
    """List providers with their endpoints and key counts."""
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import providers as provider_service

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[list[object]]:
        async with sessions() as session:
            page = await provider_service.list_providers(session, CLI_ACTOR, limit=1000, offset=0)
            details = await provider_service.load_details(session, page.items)
        rows: list[list[object]] = []
        for provider in page.items:
            out = provider_service.provider_out(provider, details[provider.id])
            protocols = ",".join(e.protocol for e in out.endpoints)
            state = "enabled" if out.enabled else "disabled"
            rows.append(
                [out.id, out.name, out.type, state, out.priority, out.key_count, protocols, out.base_url]
            )
        return rows

    rows = _database_command(ctx, work)
    if not rows:
        click.echo("no providers")
        return
    _table(["ID", "NAME", "TYPE", "STATE", "PRIORITY", "KEYS", "PROTOCOLS", "BASE URL"], rows)


@providers.command("test")
@click.argument("name")
@click.option("--key", "key_name", help="Test with this key (by name) instead of the first enabled one.")
@click.pass_context
def providers_test(ctx: click.Context, name: str, key_name: str | None) -> None:
    """Call the upstream's model list with one of the provider's keys; exit 1 if it fails."""
    from isthmus.admin.schemas.providers import ProviderTestOut
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import providers as provider_service
    from isthmus.crypto import SecretBox
    from isthmus.errors import NotFoundError
    from isthmus.store import repos

    state: CliState = ctx.obj
    settings = state.settings()
    box = SecretBox.from_settings(settings.data_dir, settings.secret_key)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> ProviderTestOut:
        async with sessions() as session:
            provider = await provider_service.find_provider(session, CLI_ACTOR, name)
            key_id = None
            if key_name is not None:
                key = await repos.find_provider_key(session, provider.id, key_name)
                if key is None:
                    raise NotFoundError(f"provider {provider.name!r} has no key named {key_name!r}")
                key_id = key.id
            access = await provider_service.upstream_access(session, CLI_ACTOR, box, provider.id, key_id)
        return await provider_service.test_upstream(access, None)

    url = state.database_url(settings)
    result = _run(lambda: _with_database(url, work))
    key_label = f" with key {result.key_name!r}" if result.key_name else ""
    if result.ok:
        click.echo(f"ok: {name}{key_label}: {result.model_count} model(s) in {result.latency_ms:.0f} ms")
        return
    status = f"HTTP {result.status}: " if result.status else ""
    click.echo(
        f"failed: {name}{key_label} after {result.latency_ms:.0f} ms: {status}{result.error}", err=True
    )
    sys.exit(1)


# --- usage --------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30d``/``12h``/``90m``/``2w`` ago, or an ISO date/time (no zone means UTC)."""
    now = now or utcnow()
    match = _DURATION.match(text.strip().lower())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{_DURATION_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration ago (30d, 12h, 90m, 2w) nor an ISO date/time"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=now.tzinfo)


@main.group()
def usage() -> None:
    """Read usage records."""


@usage.command("export")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The YAML config file (overrides the global --config).",
)
@click.option("--since", help="Records from this time on: a duration ago (30d, 12h) or an ISO date/time.")
@click.option("--until", help="Records before this time: a duration ago or an ISO date/time.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    required=True,
    help="csv: a header row, then one row per record. json: one JSON object per record per line.",
)
@click.option("--model", help="Only records of this public model.")
@click.option("--key", "key_name", help="Only records of this gateway key (by name or id).")
@click.option("--user", "username", help="Only records of this user (by username).")
@click.pass_context
def usage_export(
    ctx: click.Context,
    config_path: Path | None,
    since: str | None,
    until: str | None,
    fmt: str,
    model: str | None,
    key_name: str | None,
    username: str | None,
) -> None:
    """Write usage records to stdout, oldest first, streamed as they are read.

    Each record has the fields of a usage record: ids and names of the key, user, team, provider and
    provider key; models requested and upstream; protocols; status; tokens by kind; list and actual
    cost (exact decimals); the prices billed; latency, time to first token and attempts.
    """
    from isthmus.accounting.reporting import ExportFormat, UsageFilters
    from isthmus.admin.services import CLI_ACTOR
    from isthmus.admin.services import keys as key_service
    from isthmus.admin.services import usage as usage_service
    from isthmus.store import repos

    state: CliState = ctx.obj
    url = state.database_url(state.settings(config=config_path))
    start = parse_since(since) if since else None
    end = parse_since(until) if until else None
    out = sys.stdout.buffer
    export_format: ExportFormat = "csv" if fmt == "csv" else "json"

    async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
        filters = UsageFilters(model=model)
        if key_name is not None or username is not None:
            async with sessions() as session:
                if key_name is not None:
                    filters.key_id = (await key_service.find_key(session, CLI_ACTOR, key_name)).id
                if username is not None:
                    filters.user_id = (await repos.users.get_by_name(session, username)).id
        stream = usage_service.export_stream(
            sessions, CLI_ACTOR, export_format, since=start, until=end, filters=filters
        )
        async for piece in stream:
            out.write(piece)
            out.flush()

    try:
        _run(lambda: _with_database(url, work))
    except BrokenPipeError:
        # The reader went away (`| head`); nothing left to say.
        sys.stderr.close()


if __name__ == "__main__":  # pragma: no cover
    main()

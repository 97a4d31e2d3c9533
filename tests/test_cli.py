"""The ``isthmus`` CLI through click's runner, against a temporary SQLite database and real HTTP upstreams."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from isthmus.admin.schemas.providers import ProviderCreate
from isthmus.admin.services import CLI_ACTOR
from isthmus.admin.services.providers import create_provider
from isthmus.cli import main, parse_expiry
from isthmus.crypto import SecretBox, hash_gateway_key, verify_password
from isthmus.providers.mock_server import BackgroundMockServer
from isthmus.store.db import create_engine, session_factory
from isthmus.store.tables import AuditEntry, GatewayKey, Model, User
from services import free_port, run_async_in_thread

GOOD_CONFIG = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    keys: [{name: main, secret: "${TEST_CLI_OPENAI_KEY}"}]
  - {name: local, type: mock}
models:
  - name: gpt-4o
    routes: [{provider: openai, model: gpt-4o-2024-11-20}]
teams: [{name: research}]
users: [{username: alice, team: research}]
keys: [{name: alice-laptop, user: alice, models: [gpt-4o]}]
"""

BAD_CONFIG = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    keys: [{name: main, secret: "${TEST_CLI_MISSING_VAR}"}]
  - name: anthropic
    type: anthropic
    base_url: https://api.anthropic.com
    keys: [{name: main, secret: x, weight: -1}]
scheduling: fastest
"""


@dataclass
class Cli:
    data_dir: Path
    database_url: str

    def run(self, args: Sequence[str], input: str | None = None) -> Result:
        """Invoke in a thread: each command runs its own event loop with asyncio.run."""
        env = {"ISTHMUS_DATA_DIR": str(self.data_dir), "ISTHMUS_DATABASE_URL": self.database_url}
        results: list[Result] = []
        thread = threading.Thread(
            target=lambda: results.append(CliRunner().invoke(main, list(args), input=input, env=env))
        )
        thread.start()
        thread.join()
        return results[0]

    def query(self, statement: object) -> list[object]:
        async def work() -> list[object]:
            engine = create_engine(self.database_url)
            try:
                async with session_factory(engine)() as session:
                    return list((await session.scalars(statement)).all())  # type: ignore[call-overload]
            finally:
                await engine.dispose()

        return run_async_in_thread(work)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in ("ISTHMUS_CONFIG", "ISTHMUS_SECRET_KEY", "ISTHMUS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return Cli(tmp_path / "data", f"sqlite+aiosqlite:///{(tmp_path / 'cli.db').as_posix()}")


def test_config_check_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.setenv("TEST_CLI_OPENAI_KEY", "sk-from-env")
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_CONFIG)
    result = cli.run(["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok: {path}: 2 provider(s) with 1 key(s), 1 model(s)")
    assert "1 team(s), 1 user(s), 1 gateway key(s)" in result.output


def test_config_check_bad_file_names_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    monkeypatch.delenv("TEST_CLI_MISSING_VAR", raising=False)
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = cli.run(["config", "check", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "providers[0].keys[0].secret: environment variable TEST_CLI_MISSING_VAR is not set" in lines
    assert any(line.startswith("providers[1].keys[0].weight: ") for line in lines)
    assert any(line.startswith("scheduling: ") for line in lines)
    assert lines[-1] == f"{path}: 3 problem(s)"

    missing = cli.run(["config", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1
    assert "cannot read" in missing.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [\n")
    assert "invalid YAML" in cli.run(["config", "check", str(broken)]).output


def test_migrate_and_admin_create(cli: Cli) -> None:
    migrated = cli.run(["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert "is at revision" in migrated.output

    created = cli.run(["admin", "create", "boss"], input="boss-password-1\nboss-password-1\n")
    assert created.exit_code == 0, created.output
    assert "boss-password-1" not in created.output
    users = cli.query(select(User))
    assert len(users) == 1
    boss = users[0]
    assert isinstance(boss, User)
    assert boss.role == "admin" and verify_password("boss-password-1", boss.password_hash)
    audit = cli.query(select(AuditEntry.actor))
    assert audit == ["cli"]

    again = cli.run(["admin", "create", "boss", "--password", "another-password"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    short = cli.run(["admin", "create", "tiny", "--password", "short"])
    assert short.exit_code == 1 and "password" in short.output

    reset = cli.run(["admin", "set-password", "boss", "--password", "new-password-22"])
    assert reset.exit_code == 0, reset.output
    refreshed = cli.query(select(User))[0]
    assert isinstance(refreshed, User) and verify_password("new-password-22", refreshed.password_hash)
    assert cli.run(["admin", "set-password", "ghost", "--password", "new-password-22"]).exit_code == 1


def test_keys_create_list_revoke(cli: Cli) -> None:
    assert cli.run(["admin", "create", "owner", "--password", "owner-password-1"]).exit_code == 0
    created = cli.run(["keys", "create", "laptop", "--user", "owner", "--expires", "30d"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("sk-isthmus-")
    rows = cli.query(select(GatewayKey))
    assert len(rows) == 1
    key = rows[0]
    assert isinstance(key, GatewayKey)
    assert key.key_hash == hash_gateway_key(secret)
    assert key.expires_at is not None
    assert timedelta(days=29) < key.expires_at - datetime.now(UTC) <= timedelta(days=30)

    second = cli.run(["keys", "create", "ci"])
    assert second.exit_code == 0
    listed = cli.run(["keys", "list"])
    assert listed.exit_code == 0
    assert "laptop" in listed.output and "ci" in listed.output
    assert secret not in listed.output
    assert key.key_prefix in listed.output

    by_name = cli.run(["keys", "revoke", "laptop"])
    assert by_name.exit_code == 0 and "revoked key 'laptop'" in by_name.output
    ci_id = next(k.id for k in cli.query(select(GatewayKey)) if isinstance(k, GatewayKey) and k.name == "ci")
    assert cli.run(["keys", "revoke", str(ci_id)]).exit_code == 0
    revoked = cli.run(["keys", "list", "--status", "revoked"])
    assert revoked.output.count("revoked") == 2
    assert cli.run(["keys", "list", "--status", "active"]).output.strip() == "no keys"

    unknown = cli.run(["keys", "revoke", "nope"])
    assert unknown.exit_code == 1 and "no gateway key named 'nope'" in unknown.output
    no_model = cli.run(["keys", "create", "x", "--models", "gpt-4o,unknown"])
    assert no_model.exit_code == 1 and "no model named 'gpt-4o'" in no_model.output
    bad_expiry = cli.run(["keys", "create", "y", "--expires", "someday"])
    assert bad_expiry.exit_code == 2 and "duration" in bad_expiry.output
    no_user = cli.run(["keys", "create", "z", "--user", "ghost"])
    assert no_user.exit_code == 1 and "no user named 'ghost'" in no_user.output


def test_keys_create_with_models(cli: Cli) -> None:
    assert cli.run(["migrate"]).exit_code == 0

    async def add_models() -> None:
        engine = create_engine(cli.database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                session.add_all([Model(name="gpt-4o"), Model(name="claude")])
        finally:
            await engine.dispose()

    run_async_in_thread(add_models)
    created = cli.run(["keys", "create", "limited", "--models", "gpt-4o, claude"])
    assert created.exit_code == 0, created.output
    key = cli.query(select(GatewayKey))[0]
    assert isinstance(key, GatewayKey) and key.allowed_models == ["gpt-4o", "claude"]
    assert "gpt-4o,claude" in cli.run(["keys", "list"]).output


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[BackgroundMockServer]:
    with BackgroundMockServer() as server:
        yield server


def test_providers_list_and_test(cli: Cli, mock_upstream: BackgroundMockServer) -> None:
    assert cli.run(["migrate"]).exit_code == 0
    # The CLI finds the encryption key the same way the server does: ISTHMUS_DATA_DIR/secret.key.
    box = SecretBox.from_settings(cli.data_dir, None)

    async def add_providers() -> None:
        engine = create_engine(cli.database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                for body in (
                    {"name": "up", "type": "openai", "base_url": f"{mock_upstream.url}/v1"},
                    {"name": "down", "type": "anthropic", "base_url": f"http://127.0.0.1:{free_port()}"},
                ):
                    create = ProviderCreate.model_validate(
                        {**body, "keys": [{"name": "main", "secret": "sk-x"}]}
                    )
                    await create_provider(session, CLI_ACTOR, box, create)
        finally:
            await engine.dispose()

    run_async_in_thread(add_providers)
    listed = cli.run(["providers", "list"])
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["ID", "NAME", "TYPE", "STATE", "PRIORITY", "KEYS", "PROTOCOLS", "BASE", "URL"]
    assert "openai-chat,openai-responses" in lines[1] and f"{mock_upstream.url}/v1" in lines[1]

    ok = cli.run(["providers", "test", "up"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("ok: up with key 'main': 3 model(s)")
    failed = cli.run(["providers", "test", "down"])
    assert failed.exit_code == 1
    assert "failed: down with key 'main'" in failed.output and "cannot reach" in failed.output
    assert cli.run(["providers", "test", "up", "--key", "nope"]).exit_code == 1
    assert cli.run(["providers", "test", "ghost"]).exit_code == 1


def test_parse_expiry() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2025-06-30", now) == datetime(2025, 6, 30, tzinfo=UTC)
    assert parse_expiry("2025-06-30T10:00:00+02:00", now) == datetime(2025, 6, 30, 8, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_expiry("soon", now)


def test_help_texts() -> None:
    runner = CliRunner()
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["keys", "create", "--help"],
        ["config", "check", "--help"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0
        assert "Usage: " in result.output
    serve_help = runner.invoke(main, ["serve", "--help"]).output
    for option in ("--config", "--host", "--port", "--workers"):
        assert option in serve_help

"""``isthmus usage export`` through click's runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from accounting.usage_samples import BASE_TIME, make_bundle
from isthmus.accounting.records import UsageRecord
from isthmus.accounting.reporting import EXPORT_FIELDS
from isthmus.accounting.writer import write_batch
from isthmus.cli import main, parse_since
from isthmus.store.db import create_engine, session_factory
from services import run_async_in_thread


def run(args: Sequence[str], env: dict[str, str]) -> Result:
    """In a thread: the command runs its own event loop."""
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(CliRunner().invoke(main, list(args), env=env)))
    thread.start()
    thread.join()
    return results[0]


@pytest.fixture
def seeded(migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[UsageRecord]:
    for name in ("ISTHMUS_CONFIG", "ISTHMUS_SECRET_KEY", "ISTHMUS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    bundles = [make_bundle(i, seed=21) for i in range(150)]

    async def write() -> None:
        engine = create_engine(migrated_database_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                await write_batch(session, bundles)
        finally:
            await engine.dispose()

    run_async_in_thread(write)
    return [b.usage for b in bundles]


def ordered(records: Sequence[UsageRecord]) -> list[UsageRecord]:
    return sorted(records, key=lambda r: (r.started_at, r.request_id))


def test_json_export_is_one_object_per_record(
    seeded: list[UsageRecord], migrated_database_url: str, tmp_path: Path
) -> None:
    env = {"ISTHMUS_DATA_DIR": str(tmp_path / "data"), "ISTHMUS_DATABASE_URL": migrated_database_url}
    result = run(["usage", "export", "--format", "json"], env)
    assert result.exit_code == 0, result.output
    objects = [orjson.loads(line) for line in result.stdout_bytes.splitlines()]
    assert [o["request_id"] for o in objects] == [r.request_id for r in ordered(seeded)]
    assert all(tuple(o) == EXPORT_FIELDS for o in objects)
    first = ordered(seeded)[0]
    assert Decimal(objects[0]["actual_cost"]) == first.actual_cost
    assert objects[0]["prices"] == first.prices


def test_csv_export_with_a_time_window_and_a_model(
    seeded: list[UsageRecord], migrated_database_url: str, tmp_path: Path
) -> None:
    env = {"ISTHMUS_DATA_DIR": str(tmp_path / "data"), "ISTHMUS_DATABASE_URL": migrated_database_url}
    since, until = BASE_TIME + timedelta(hours=6), BASE_TIME + timedelta(hours=20)
    args = ["usage", "export", "--format", "csv", "--since", since.isoformat(), "--until", until.isoformat()]
    result = run([*args, "--model", "gpt-4o"], env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = [r for r in ordered(seeded) if since <= r.started_at < until and r.model_requested == "gpt-4o"]
    assert expected and [row["request_id"] for row in rows] == [r.request_id for r in expected]
    assert [Decimal(row["list_cost"]) for row in rows] == [r.list_cost for r in expected]
    # Relative times count back from now: nothing in the last 30 days, only the header row.
    recent = run(["usage", "export", "--format", "csv", "--since", "30d"], env)
    assert recent.exit_code == 0 and recent.stdout.splitlines() == [",".join(EXPORT_FIELDS)]


def test_export_reads_the_database_named_in_the_config_file(
    seeded: list[UsageRecord], migrated_database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "isthmus.yaml"
    config.write_text(f"database_url: {migrated_database_url}\n")
    env = {"ISTHMUS_DATA_DIR": str(tmp_path / "data")}
    result = run(["usage", "export", "--config", str(config), "--format", "json"], env)
    assert result.exit_code == 0, result.output
    assert len(result.stdout_bytes.splitlines()) == len(seeded)


def test_export_by_key_name_and_bad_arguments(
    seeded: list[UsageRecord], migrated_database_url: str, tmp_path: Path
) -> None:
    env = {"ISTHMUS_DATA_DIR": str(tmp_path / "data"), "ISTHMUS_DATABASE_URL": migrated_database_url}
    created = run(["keys", "create", "first-key"], env)
    assert created.exit_code == 0, created.output
    listed = run(["keys", "list"], env).stdout.splitlines()
    key_id = int(next(line for line in listed if "first-key" in line).split()[0])
    result = run(["usage", "export", "--format", "json", "--key", "first-key"], env)
    assert result.exit_code == 0, result.output
    ids = [orjson.loads(line)["request_id"] for line in result.stdout_bytes.splitlines()]
    assert ids == [r.request_id for r in ordered(seeded) if r.key_id == key_id] and ids

    unknown = run(["usage", "export", "--format", "json", "--key", "no-such-key"], env)
    assert unknown.exit_code == 1 and "no-such-key" in unknown.output
    assert run(["usage", "export", "--format", "xml"], env).exit_code == 2
    assert run(["usage", "export", "--format", "csv", "--since", "yesterday"], env).exit_code == 2
    assert run(["usage", "export"], env).exit_code == 2  # --format is required


def test_parse_since() -> None:
    now = BASE_TIME
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-03-01T00:00:00", now) == BASE_TIME.replace(day=1, hour=0)

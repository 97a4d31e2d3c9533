"""``/api/usage``: reports, records, exports and unknown prices through the admin API, on SQLite and
PostgreSQL, with members confined to their own usage."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from accounting.usage_samples import BASE_TIME, make_bundle
from admin.support import AdminEnv
from isthmus.accounting.records import ERROR_STATUSES, RecordBundle, UsageRecord
from isthmus.accounting.reporting import EXPORT_FIELDS
from isthmus.accounting.writer import write_batch

RANGE = {
    "from": (BASE_TIME - timedelta(days=1)).isoformat(),
    "to": (BASE_TIME + timedelta(days=3)).isoformat(),
}


@dataclass
class World:
    admin: httpx.AsyncClient
    member: httpx.AsyncClient
    mia_id: int
    bob_id: int
    team_id: int
    mia_key: int
    bob_key: int
    provider_id: int
    records: list[UsageRecord]


@pytest.fixture
async def world(admin_env: AdminEnv, admin: httpx.AsyncClient) -> World:
    team = (await admin.post("/teams", json={"name": "research"})).json()["id"]
    mia = await admin_env.create_user(admin, "mia", team_id=team)
    bob = await admin_env.create_user(admin, "bob")
    mia_key = (await admin.post("/keys", json={"name": "mia-laptop", "user_id": mia})).json()["id"]
    bob_key = (await admin.post("/keys", json={"name": "bob-ci", "user_id": bob})).json()["id"]
    provider = (await admin.post("/providers", json={"name": "local", "type": "mock"})).json()["id"]
    bundles: list[RecordBundle] = []
    for i in range(160):
        owner = (mia, mia_key, team) if i % 3 else (bob, bob_key, None)
        b = make_bundle(
            i, seed=5, user_id=owner[0], key_id=owner[1], provider_id=provider, with_log=i % 4 == 0
        )
        b.usage.team_id = owner[2]
        b.usage.key_name = "bob-ci" if owner[1] == bob_key else "mia-laptop"
        bundles.append(b)
    async with admin_env.services.changing(notify=False) as session:
        await write_batch(session, bundles)
    member = await admin_env.login("mia", "mia-password-1")
    return World(admin, member, mia, bob, team, mia_key, bob_key, provider, [b.usage for b in bundles])


def sums(records: Sequence[UsageRecord]) -> dict[str, Any]:
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.status in ERROR_STATUSES),
        "total_tokens": sum(r.total_tokens for r in records),
        "actual_cost": str(sum((r.actual_cost for r in records), Decimal(0))),
    }


def picked(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {k: metrics[k] for k in ("requests", "errors", "total_tokens")}
    out["actual_cost"] = str(Decimal(metrics["actual_cost"]))
    return out


async def test_breakdowns_name_their_groups(world: World) -> None:
    for by, attribute, names in (
        ("key", "key_id", {world.mia_key: "mia-laptop", world.bob_key: "bob-ci"}),
        ("user", "user_id", {world.mia_id: "mia", world.bob_id: "bob"}),
        ("provider", "provider_id", {world.provider_id: "local"}),
    ):
        response = await world.admin.get("/usage/breakdown", params={"by": by, **RANGE})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["by"] == by and body["from"] == RANGE["from"].replace("+00:00", "Z")
        got = {item["group"]["id"]: item for item in body["items"]}
        assert {i: g["group"]["name"] for i, g in got.items()} == names
        for ident, item in got.items():
            assert picked(item["metrics"]) == sums(
                [r for r in world.records if getattr(r, attribute) == ident]
            )
        assert picked(body["total"]) == sums(world.records)
    teams = (await world.admin.get("/usage/breakdown", params={"by": "team", **RANGE})).json()["items"]
    assert {(t["group"]["id"], t["group"]["name"]) for t in teams} == {
        (world.team_id, "research"),
        (None, None),
    }


async def test_timeseries_buckets_groups_and_metric_choice(world: World) -> None:
    params = {
        **RANGE,
        "bucket": "day",
        "group_by": "model",
        "metric": ["requests,actual_cost", "latency_p95_ms"],
    }
    response = await world.admin.get("/usage/timeseries", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metrics"] == ["requests", "actual_cost", "latency_p95_ms"]
    total = 0
    for series in body["series"]:
        assert series["group"]["kind"] == "model"
        for point in series["points"]:
            assert set(point) == {"t", "requests", "actual_cost", "latency_p95_ms"}
            assert point["t"].endswith("T00:00:00Z")
            total += point["requests"]
    assert total == len(world.records)

    hourly = (await world.admin.get("/usage/timeseries", params=RANGE)).json()
    (only,) = hourly["series"]
    assert only["group"] is None and sum(p["requests"] for p in only["points"]) == len(world.records)
    assert {"latency_p50_ms", "ttft_avg_ms", "list_cost"} <= set(only["points"][0])

    for bad, field in (
        ({"metric": "nope"}, "query.metric"),
        ({"tz": "Mars/Olympus"}, "query.tz"),
        ({"from": RANGE["to"], "to": RANGE["from"]}, "query.from"),
        ({"bucket": "week"}, "query.bucket"),
    ):
        answer = await world.admin.get("/usage/timeseries", params={**RANGE, **bad})
        assert answer.status_code == 422, bad
        assert answer.json()["error"]["field"] == field


async def test_members_see_only_their_own_usage(world: World) -> None:
    mine = [r for r in world.records if r.user_id == world.mia_id]
    breakdown = (await world.member.get("/usage/breakdown", params={"by": "key", **RANGE})).json()
    assert [i["group"]["name"] for i in breakdown["items"]] == ["mia-laptop"]
    assert picked(breakdown["total"]) == sums(mine)
    series = (await world.member.get("/usage/timeseries", params=RANGE)).json()["series"]
    assert sum(p["requests"] for s in series for p in s["points"]) == len(mine)

    refused = await world.member.get("/usage/breakdown", params={"by": "key", "user_id": world.bob_id})
    assert refused.status_code == 403
    listed = (await world.member.get("/usage/records", params={"limit": 500})).json()["items"]
    assert {r["request_id"] for r in listed} == {r.request_id for r in mine}
    bobs = next(r for r in world.records if r.user_id == world.bob_id)
    assert (await world.member.get(f"/usage/records/{bobs.request_id}")).status_code == 404
    assert (await world.admin.get(f"/usage/records/{bobs.request_id}")).status_code == 200
    exported = (await world.member.get("/usage/export", params={"format": "json"})).content.splitlines()
    assert {orjson.loads(line)["request_id"] for line in exported} == {r.request_id for r in mine}
    assert (await world.member.get("/usage/export", params={"user_id": world.bob_id})).status_code == 403
    assert (await world.member.get("/usage/unknown-prices")).status_code == 403


async def test_record_listing_pages_and_detail(world: World) -> None:
    expected = sorted(world.records, key=lambda r: (r.started_at, r.request_id), reverse=True)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 45}
    while True:
        page = (await world.admin.get("/usage/records", params=params)).json()
        seen += [r["request_id"] for r in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [r.request_id for r in expected]
    bad = await world.admin.get("/usage/records", params={"cursor": "%%%"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.cursor"
    failed = (await world.admin.get("/usage/records", params={"status": "cut", "limit": 500})).json()["items"]
    assert {r["request_id"] for r in failed} == {r.request_id for r in world.records if r.status == "cut"}

    record = world.records[4]  # has a log (i % 4 == 0)
    detail = (await world.admin.get(f"/usage/records/{record.request_id}")).json()
    assert detail["record"]["request_id"] == record.request_id
    assert Decimal(detail["record"]["list_cost"]) == record.list_cost
    assert detail["record"]["prices"] == record.prices
    assert len(detail["attempts"]) == record.attempts and detail["attempts"][-1]["status"] == "ok"
    assert detail["log"]["level"] == "full" and detail["log"]["request_body"]
    assert (await world.admin.get("/usage/records/req_nope")).status_code == 404


async def test_csv_export_streams_every_field(world: World) -> None:
    response = await world.admin.get("/usage/export", params={"format": "csv", "key_id": world.bob_key})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "usage.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    bobs = sorted(
        (r for r in world.records if r.key_id == world.bob_key), key=lambda r: (r.started_at, r.request_id)
    )
    assert tuple(rows[0]) == EXPORT_FIELDS
    assert [row["request_id"] for row in rows] == [r.request_id for r in bobs]
    assert [Decimal(row["actual_cost"]) for row in rows] == [r.actual_cost for r in bobs]
    ndjson = await world.admin.get("/usage/export", params={"format": "json"})
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert len(ndjson.content.splitlines()) == len(world.records)


async def test_deleted_key_keeps_its_name_in_reports(world: World) -> None:
    assert (await world.admin.delete(f"/keys/{world.bob_key}")).status_code == 204
    items = (await world.admin.get("/usage/breakdown", params={"by": "key", **RANGE})).json()["items"]
    assert {i["group"]["name"] for i in items} == {"mia-laptop", "bob-ci"}


async def test_unknown_prices(world: World, admin_env: AdminEnv) -> None:
    route = {"provider": "local", "upstream_model": "house-model-v1"}
    assert (
        await world.admin.post("/models", json={"name": "house-model", "routes": [route]})
    ).status_code == 201
    priced = {"name": "priced-model", "routes": [route], "price": {"input": 1, "output": 2}}
    assert (await world.admin.post("/models", json=priced)).status_code == 201
    unpriced = make_bundle(1000, seed=5, started_at=BASE_TIME, model="house-model")
    unpriced.usage.prices = None
    async with admin_env.services.changing(notify=False) as session:
        await write_batch(session, [unpriced])
    body = (await world.admin.get("/usage/unknown-prices", params=RANGE)).json()
    assert body["configured"] == [{"model": "house-model", "upstream_models": ["house-model-v1"]}]
    assert [(u["model"], u["requests"], u["tokens"]) for u in body["used"]] == [
        ("house-model", 1, unpriced.usage.total_tokens)
    ]

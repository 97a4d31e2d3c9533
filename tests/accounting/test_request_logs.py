"""Request logs: levels, caps, and redaction — no secret reaches a stored log at the ``full`` level."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accounting.usage_samples import make_bundle
from isthmus.accounting.records import LogLevel, RecordBundle
from isthmus.accounting.request_logs import (
    REDACTED,
    BodyCapture,
    Redactor,
    body_text,
    build_request_log,
    effective_level,
    redact,
    redact_errors,
)
from isthmus.accounting.writer import UsageWriter
from isthmus.store.db import create_engine, session_factory
from isthmus.store.usage_tables import RequestLogRow, UsageAttemptRow, UsageRecordRow
from services import free_port

PROVIDER_SECRETS = (
    "sk-proj-PROVIDERsecretAAAA1111bbbb",
    "AIzaSyPROVIDERgeminiKEY0123456789",
    "ant-api03-PROVIDERzzzz9999",
)
GATEWAY_KEY = "isk-GATEWAYkey-5f2c9a7e1d3b4c6a8e0f"
SECRETS = (*PROVIDER_SECRETS, GATEWAY_KEY)
CAP = 4096


def test_levels_and_key_override() -> None:
    assert effective_level("base", None) is LogLevel.BASE
    assert effective_level("base", "full") is LogLevel.FULL
    assert effective_level("full", "headers") is LogLevel.HEADERS
    assert effective_level("nonsense", None) is LogLevel.BASE
    redactor = Redactor(PROVIDER_SECRETS)
    headers = {"content-type": "application/json"}
    assert build_request_log("r", "base", redactor, request_headers=headers, request_body=b"{}") is None
    only_headers = build_request_log("r", "headers", redactor, request_headers=headers, request_body=b"{}")
    assert only_headers is not None
    assert only_headers.request_headers == headers and only_headers.request_body is None
    full = build_request_log(
        "r", "full", redactor, request_headers=headers, request_body=b"{}", response_body=b"ok"
    )
    assert full is not None and (full.request_body, full.response_body) == ("{}", "ok")


def test_credential_headers_and_patterns_are_masked() -> None:
    redactor = Redactor(PROVIDER_SECRETS)
    headers = {
        "Authorization": f"Bearer {GATEWAY_KEY}",
        "x-api-key": "anything-at-all",
        "X-Goog-Api-Key": "whatever-value",
        "api-key": "azure-ish-value",
        "Cookie": "session=abc; other=def",
        "set-cookie": "id=1; HttpOnly",
        "x-custom": f"carries {PROVIDER_SECRETS[0]} inside",
        "referer": "https://example.test/v1beta/models/m:generateContent?alt=sse&key=AIzaLEAKED00000000",
        "anthropic-version": "2023-06-01",
    }
    out = redactor.headers(headers, [GATEWAY_KEY])
    for name in ("authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "set-cookie"):
        assert out[name] == REDACTED
    assert out["x-custom"] == f"carries {REDACTED} inside"
    assert out["referer"].endswith(f"&key={REDACTED}")
    assert out["anthropic-version"] == "2023-06-01"

    text = (
        '{"note": "Authorization: Bearer tok_abcdefghijkl", '
        '"inner": "{\\"x-api-key\\": \\"nested-secret-value\\"}",'
        f' "url": "/v1/models?key=plainKEYvalue123", "k": "{PROVIDER_SECRETS[1]}"}}'
    )
    masked = redactor.redact(text)
    for leaked in ("tok_abcdefghijkl", "nested-secret-value", "plainKEYvalue123", PROVIDER_SECRETS[1]):
        assert leaked not in masked
    assert orjson.loads(masked)["url"] == f"/v1/models?key={REDACTED}"
    # The one-off helper agrees with the compiled redactor.
    assert redact(text, PROVIDER_SECRETS) == masked


def test_short_secrets_are_not_treated_as_secrets() -> None:
    # A 3-letter test key would otherwise blank every "abc" in every body.
    assert Redactor(["abc"]).redact("abcdef") == "abcdef"


@pytest.mark.parametrize("offset", range(CAP - 48, CAP + 48, 5))
def test_a_secret_at_the_cap_never_leaks_even_in_part(offset: int) -> None:
    secret = PROVIDER_SECRETS[0]
    redactor = Redactor([secret])
    body = b"a" * offset + secret.encode() + b"b" * (3 * CAP)
    for source in (body, _captured(body, CAP, redactor)):
        text = body_text(source, redactor, cap=CAP)
        assert secret[:4] not in text
        assert len(text.encode()) <= CAP + 64
        assert text.endswith(f"[truncated: {len(body)} bytes in all]")


def test_many_redactions_cannot_pull_a_cut_secret_under_the_cap() -> None:
    # Each 33-byte secret becomes a 10-byte marker, so text from past the kept bytes' end moves left.
    secret = PROVIDER_SECRETS[0]
    redactor = Redactor([secret])
    body = (secret + " ").encode() * 2000
    for source in (body, _captured(body, CAP, redactor)):
        text = body_text(source, redactor, cap=CAP)
        assert "sk-p" not in text
        assert text.startswith(f"{REDACTED} {REDACTED} ")


def test_small_bodies_are_kept_whole_and_utf8_survives() -> None:
    redactor = Redactor(PROVIDER_SECRETS)
    assert body_text("héllo ✓".encode(), redactor, cap=CAP) == "héllo ✓"
    cut = body_text(("✓" * 3000).encode(), redactor, cap=CAP)
    assert cut.startswith("✓") and "\ufffd" not in cut and "[truncated: 9000 bytes in all]" in cut


def _captured(body: bytes, cap: int, redactor: Redactor) -> BodyCapture:
    capture = BodyCapture(cap, redactor.longest_secret)
    for i in range(0, len(body), 1000):
        capture.feed(body[i : i + 1000])
    assert capture.total == len(body)
    return capture


def leaky_bundles(redactor: Redactor) -> list[RecordBundle]:
    """Requests whose headers, bodies and errors are full of credentials, logged at ``full``."""
    bundles: list[RecordBundle] = []
    for n, secret in enumerate(SECRETS * 3):
        request_body = orjson.dumps(
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": f"my key is {secret}, and Bearer {secret}"}],
                "metadata": {"api-key": secret, "url": f"https://x.test/?key={secret}"},
            }
        )
        big = b"x" * (CAP - 10) + secret.encode() + b"y" * 100  # straddles the cap
        bundle = make_bundle(n, seed=3)
        bundle.usage.error = f"upstream said: invalid key {secret}"
        for attempt in bundle.attempts:
            attempt.error = f"401 from upstream for key {secret}"
        bundle.log = build_request_log(
            bundle.request_id,
            "full",
            redactor,
            extra_secrets=[GATEWAY_KEY],
            request_headers={
                "authorization": f"Bearer {GATEWAY_KEY}",
                "x-goog-api-key": secret,
                "cookie": f"s={secret}",
                "user-agent": f"tool/{secret}",
            },
            response_headers={"set-cookie": f"t={secret}", "x-echo": secret},
            request_body=request_body if n % 2 else big,
            response_body=b"data: " + orjson.dumps({"error": {"message": f"bad key {secret}"}}),
            body_cap=CAP,
        )
        redact_errors(bundle, redactor, [GATEWAY_KEY])
        bundles.append(bundle)
    return bundles


def assert_no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret[:12] not in text  # nor a recognisable part of one


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_no_secret_in_any_stored_log_at_full_level(engine: AsyncEngine, tmp_path: Path) -> None:
    sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
    redactor = Redactor(PROVIDER_SECRETS)
    bundles = leaky_bundles(redactor)

    # Half goes through a spool first (database down), half straight in: neither path may see a secret.
    spool = tmp_path / "spool"
    dead_engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    dead = UsageWriter(session_factory(dead_engine), spool, flush_interval=0.02)
    dead.start()
    for bundle in bundles[::2]:
        dead.submit(bundle)
    await dead.flush()
    await dead.stop(10)
    await dead_engine.dispose()
    spooled = b"".join(p.read_bytes() for p in spool.glob("*.jsonl"))
    assert spooled.count(b"\n") == len(bundles[::2])
    assert_no_secret_in(spooled.decode())

    writer = UsageWriter(sessions, spool, flush_interval=0.02)
    writer.start()
    for bundle in bundles[1::2]:
        writer.submit(bundle)
    await writer.flush()
    await writer.stop(10)
    assert writer.stats.written == len(bundles)

    async with sessions() as session:
        logs = (await session.scalars(select(RequestLogRow))).all()
        records = (await session.scalars(select(UsageRecordRow))).all()
        attempts = (await session.scalars(select(UsageAttemptRow))).all()
    assert len(logs) == len(bundles)
    for row in logs:
        assert row.level == "full" and row.request_body and row.response_headers
        stored = orjson.dumps(
            [row.request_headers, row.response_headers, row.request_body, row.response_body]
        ).decode()
        assert_no_secret_in(stored)
        assert REDACTED in stored
    for record in records:
        assert_no_secret_in(record.error or "")
    for attempt in attempts:
        assert_no_secret_in(attempt.error or "")

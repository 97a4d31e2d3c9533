"""Providers, their endpoints (one base URL per protocol) and their keys, plus the upstream checks.

Provider key secrets are write-only: stored encrypted with the ``SecretBox``, answered only as a
masked hint. Deleting a provider removes its endpoints, keys and the routes that use it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from isthmus.admin.schemas.providers import (
    EndpointIn,
    EndpointOut,
    ProviderCreate,
    ProviderKeyCreate,
    ProviderKeyOut,
    ProviderKeyUpdate,
    ProviderOut,
    ProviderTestOut,
    ProviderUpdate,
)
from isthmus.admin.services import Actor
from isthmus.admin.services.common import (
    audit,
    audit_update,
    ensure_api_managed,
    plain,
    require_admin,
    snapshot,
    updates,
)
from isthmus.admin.validation import AdminValidationError
from isthmus.config.schema import DEFAULT_PROTOCOLS
from isthmus.crypto import SecretBox, mask_secret
from isthmus.errors import ConfigError, IsthmusError, NotFoundError, UpstreamError
from isthmus.ir.protocol import Protocol
from isthmus.providers.catalog import fetch_upstream_models
from isthmus.providers.http import new_client_session
from isthmus.store import repos
from isthmus.store.repos import Page
from isthmus.store.tables import Provider, ProviderEndpoint, ProviderKey

# Which endpoint's base URL the model-list call uses, by provider type.
_CATALOG_PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "openai": (Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES),
    "azure": (Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES),
    "anthropic": (Protocol.ANTHROPIC,),
    "gemini": (Protocol.GEMINI,),
}
UPSTREAM_TIMEOUT = 10.0


# --- Output -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderDetails:
    endpoints: list[ProviderEndpoint]
    key_count: int


async def load_details(session: AsyncSession, providers: Sequence[Provider]) -> dict[int, ProviderDetails]:
    ids = [p.id for p in providers]
    if not ids:
        return {}
    endpoints: dict[int, list[ProviderEndpoint]] = {i: [] for i in ids}
    query = (
        select(ProviderEndpoint).where(ProviderEndpoint.provider_id.in_(ids)).order_by(ProviderEndpoint.id)
    )
    for endpoint in (await session.scalars(query)).all():
        endpoints[endpoint.provider_id].append(endpoint)
    counts_query = (
        select(ProviderKey.provider_id, func.count())
        .where(ProviderKey.provider_id.in_(ids))
        .group_by(ProviderKey.provider_id)
    )
    counts = {pid: int(n) for pid, n in (await session.execute(counts_query)).all()}
    return {i: ProviderDetails(endpoints[i], counts.get(i, 0)) for i in ids}


def provider_out(provider: Provider, details: ProviderDetails) -> ProviderOut:
    endpoints = [EndpointOut(protocol=e.protocol, base_url=e.base_url) for e in details.endpoints]
    return ProviderOut(
        id=provider.id,
        name=provider.name,
        type=provider.type,
        base_url=next((e.base_url for e in endpoints if e.base_url), None),
        endpoints=endpoints,
        priority=provider.priority,
        free_tier=provider.free_tier,
        enabled=provider.enabled,
        headers=dict(provider.headers or {}),
        api_version=provider.api_version,
        timeouts=provider.timeouts,
        key_count=details.key_count,
        managed_by=provider.managed_by,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


def secret_hint(box: SecretBox, key: ProviderKey) -> str:
    try:
        return mask_secret(box.decrypt(key.secret_encrypted))
    except ConfigError:
        return "… (cannot be decrypted with the current secret key)"


def provider_key_out(box: SecretBox, key: ProviderKey) -> ProviderKeyOut:
    data = {name: getattr(key, name) for name in ProviderKeyOut.model_fields if name != "secret_hint"}
    return ProviderKeyOut.model_validate({**data, "secret_hint": secret_hint(box, key)})


def _endpoints_snapshot(endpoints: Sequence[EndpointIn | ProviderEndpoint]) -> list[dict[str, Any]]:
    return [{"protocol": str(e.protocol), "base_url": e.base_url} for e in endpoints]


# --- Providers ----------------------------------------------------------------------------------


def _check_endpoints(provider_type: str, endpoints: Sequence[EndpointIn], *, explicit: bool) -> None:
    """``explicit``: the caller sent ``endpoints``; otherwise they came from ``base_url``/``protocols``,
    and errors name those fields."""
    allowed = DEFAULT_PROTOCOLS.get(provider_type, ())
    if not endpoints:
        raise AdminValidationError(
            "a provider needs at least one protocol endpoint", param="endpoints" if explicit else "protocols"
        )
    for index, endpoint in enumerate(endpoints):
        if endpoint.protocol not in allowed:
            raise AdminValidationError(
                f"a provider of type {provider_type} cannot speak {endpoint.protocol}",
                param=f"endpoints[{index}].protocol" if explicit else f"protocols[{index}]",
            )
        if provider_type != "mock" and not endpoint.base_url:
            raise AdminValidationError(
                f"a provider of type {provider_type} needs a base_url",
                param=f"endpoints[{index}].base_url" if explicit else "base_url",
            )


async def list_providers(
    session: AsyncSession,
    actor: Actor,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    provider_type: str | None = None,
    enabled: bool | None = None,
) -> Page[Provider]:
    require_admin(actor, "list providers")
    filters: dict[str, Any] = {}
    if provider_type is not None:
        filters["type"] = provider_type
    if enabled is not None:
        filters["enabled"] = enabled
    return await repos.providers.list(session, limit=limit, offset=offset, filters=filters, search=name)


async def get_provider(session: AsyncSession, actor: Actor, provider_id: int) -> Provider:
    require_admin(actor, "view providers")
    return await repos.providers.get(session, provider_id)


async def find_provider(session: AsyncSession, actor: Actor, name_or_id: str) -> Provider:
    require_admin(actor, "view providers")
    provider = await repos.providers.find_by_name(session, name_or_id)
    if provider is not None:
        return provider
    if name_or_id.isdigit():
        return await repos.providers.get(session, int(name_or_id))
    raise NotFoundError(f"no provider named {name_or_id!r}", code="not_found")


async def create_provider(
    session: AsyncSession, actor: Actor, box: SecretBox, body: ProviderCreate
) -> Provider:
    require_admin(actor, "create providers")
    endpoints = body.endpoint_list()
    _check_endpoints(body.type, endpoints, explicit=body.endpoints is not None)
    provider = await repos.providers.create(
        session,
        name=body.name,
        type=body.type,
        priority=body.priority,
        free_tier=body.free_tier,
        enabled=body.enabled,
        headers=dict(body.headers),
        api_version=body.api_version,
        timeouts=plain(body.timeouts),
        managed_by="api",
    )
    rows = [
        ProviderEndpoint(provider_id=provider.id, protocol=str(e.protocol), base_url=e.base_url)
        for e in endpoints
    ]
    await repos.flush_or_raise(session, "provider endpoint", lambda: session.add_all(rows))
    await audit(
        session,
        actor,
        "create",
        "provider",
        entity_id=provider.id,
        entity_name=provider.name,
        after=snapshot(provider, endpoints=_endpoints_snapshot(endpoints)),
    )
    for index, key_body in enumerate(body.keys):
        try:
            await _add_key(session, actor, box, provider, key_body)
        except IsthmusError as exc:
            exc.param = f"keys[{index}].{exc.param or 'name'}"
            raise
    return provider


async def update_provider(
    session: AsyncSession, actor: Actor, provider_id: int, body: ProviderUpdate
) -> Provider:
    require_admin(actor, "edit providers")
    provider = await repos.providers.get(session, provider_id)
    ensure_api_managed(provider, "provider", provider.name)
    values = updates(
        body,
        required=("name", "priority", "free_tier", "enabled"),
        exclude=("base_url", "protocols", "endpoints"),
    )
    if "headers" in values and values["headers"] is None:
        values["headers"] = {}
    changes = await repos.providers.update(session, provider, **values)
    if body.endpoints is not None or body.base_url is not None or body.protocols is not None:
        await _replace_endpoints(session, provider, body, changes)
    await audit_update(session, actor, "provider", provider, changes, name=provider.name)
    return provider


async def _replace_endpoints(
    session: AsyncSession, provider: Provider, body: ProviderUpdate, changes: dict[str, tuple[Any, Any]]
) -> None:
    current = list(await repos.list_endpoints(session, provider.id))
    if body.endpoints is not None:
        wanted = list(body.endpoints)
    else:
        old_url = next((e.base_url for e in current if e.base_url), None)
        base_url = body.base_url if body.base_url is not None else old_url
        protocols = body.protocols or [Protocol(e.protocol) for e in current]
        wanted = [EndpointIn(protocol=p, base_url=base_url) for p in protocols]
    _check_endpoints(provider.type, wanted, explicit=body.endpoints is not None)
    before, after = _endpoints_snapshot(current), _endpoints_snapshot(wanted)
    if before == after:
        return
    by_protocol = {e.protocol: e for e in current}
    keep = {str(e.protocol) for e in wanted}
    for leftover in [e for e in current if e.protocol not in keep]:
        await session.delete(leftover)

    def apply() -> None:
        for endpoint in wanted:
            row = by_protocol.get(str(endpoint.protocol))
            if row is None:
                session.add(
                    ProviderEndpoint(
                        provider_id=provider.id, protocol=str(endpoint.protocol), base_url=endpoint.base_url
                    )
                )
            elif row.base_url != endpoint.base_url:
                row.base_url = endpoint.base_url

    await repos.flush_or_raise(session, "provider endpoint", apply)
    changes["endpoints"] = (before, after)


async def delete_provider(session: AsyncSession, actor: Actor, provider_id: int) -> None:
    require_admin(actor, "delete providers")
    provider = await repos.providers.get(session, provider_id)
    ensure_api_managed(provider, "provider", provider.name)
    endpoints = await repos.list_endpoints(session, provider.id)
    before = snapshot(provider, endpoints=_endpoints_snapshot(endpoints))
    await repos.providers.delete(session, provider)
    await audit(
        session, actor, "delete", "provider", entity_id=provider_id, entity_name=provider.name, before=before
    )


# --- Provider keys --------------------------------------------------------------------------------


async def list_provider_keys(
    session: AsyncSession,
    actor: Actor,
    provider_id: int,
    *,
    limit: int,
    offset: int,
    name: str | None = None,
    enabled: bool | None = None,
) -> Page[ProviderKey]:
    require_admin(actor, "list provider keys")
    await repos.providers.get(session, provider_id)
    filters: dict[str, Any] = {"provider_id": provider_id}
    if enabled is not None:
        filters["enabled"] = enabled
    return await repos.provider_keys.list(session, limit=limit, offset=offset, filters=filters, search=name)


async def get_provider_key(session: AsyncSession, actor: Actor, provider_id: int, key_id: int) -> ProviderKey:
    require_admin(actor, "view provider keys")
    key = await session.get(ProviderKey, key_id)
    if key is None or key.provider_id != provider_id:
        raise NotFoundError(f"provider {provider_id} has no key with id {key_id}", code="not_found")
    return key


async def _add_key(
    session: AsyncSession, actor: Actor, box: SecretBox, provider: Provider, body: ProviderKeyCreate
) -> ProviderKey:
    key = await repos.provider_keys.create(
        session,
        provider_id=provider.id,
        name=body.name,
        secret_encrypted=box.encrypt(body.secret),
        priority=body.priority,
        weight=body.weight,
        capabilities=list(body.capabilities),
        cost_multiplier=body.cost_multiplier,
        rpm=body.rpm,
        tpm=body.tpm,
        concurrency=body.concurrency,
        enabled=body.enabled,
        managed_by="api",
    )
    await audit(
        session,
        actor,
        "create",
        "provider_key",
        entity_id=key.id,
        entity_name=f"{provider.name}/{key.name}",
        after=snapshot(key, secret_hint=mask_secret(body.secret)),
    )
    return key


async def create_provider_key(
    session: AsyncSession, actor: Actor, box: SecretBox, provider_id: int, body: ProviderKeyCreate
) -> ProviderKey:
    require_admin(actor, "create provider keys")
    provider = await repos.providers.get(session, provider_id)
    ensure_api_managed(provider, "provider", provider.name)
    return await _add_key(session, actor, box, provider, body)


async def update_provider_key(
    session: AsyncSession,
    actor: Actor,
    box: SecretBox,
    provider_id: int,
    key_id: int,
    body: ProviderKeyUpdate,
) -> ProviderKey:
    key = await get_provider_key(session, actor, provider_id, key_id)
    provider = await repos.providers.get(session, provider_id)
    ensure_api_managed(key, "provider key", f"{provider.name}/{key.name}")
    values = updates(
        body,
        required=("name", "priority", "weight", "cost_multiplier", "enabled", "secret"),
        exclude=("secret",),
    )
    old_hint = secret_hint(box, key)
    if body.secret is not None:
        values["secret_encrypted"] = box.encrypt(body.secret)
    changes = await repos.provider_keys.update(session, key, **values)
    if "secret_encrypted" in changes:
        # The ciphertexts say nothing; the audit shows which secret (masked) replaced which.
        del changes["secret_encrypted"]
        changes["secret_hint"] = (old_hint, mask_secret(body.secret or ""))
    await audit_update(session, actor, "provider_key", key, changes, name=f"{provider.name}/{key.name}")
    return key


async def delete_provider_key(
    session: AsyncSession, actor: Actor, box: SecretBox, provider_id: int, key_id: int
) -> None:
    key = await get_provider_key(session, actor, provider_id, key_id)
    provider = await repos.providers.get(session, provider_id)
    name = f"{provider.name}/{key.name}"
    ensure_api_managed(key, "provider key", name)
    before = snapshot(key, secret_hint=secret_hint(box, key))
    await repos.provider_keys.delete(session, key)
    await audit(session, actor, "delete", "provider_key", entity_id=key_id, entity_name=name, before=before)


# --- Talking to the upstream --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamAccess:
    """Everything needed for a model-list call, read in one short transaction before the network call."""

    provider_type: str
    provider_name: str
    base_url: str | None
    secret: str
    api_version: str | None
    headers: dict[str, str]
    key_id: int | None
    key_name: str | None


async def upstream_access(
    session: AsyncSession, actor: Actor, box: SecretBox, provider_id: int, key_id: int | None = None
) -> UpstreamAccess:
    require_admin(actor, "test providers")
    provider = await repos.providers.get(session, provider_id)
    endpoints = await repos.list_endpoints(session, provider.id)
    wanted = _CATALOG_PROTOCOLS.get(provider.type, ())
    preferred = [e for e in endpoints if e.protocol in wanted and e.base_url]
    with_url = preferred or [e for e in endpoints if e.base_url]
    base_url = with_url[0].base_url if with_url else None
    key: ProviderKey | None
    if key_id is not None:
        key = await get_provider_key(session, actor, provider_id, key_id)
    else:
        query = (
            select(ProviderKey)
            .where(ProviderKey.provider_id == provider.id, ProviderKey.enabled.is_(True))
            .order_by(ProviderKey.priority, ProviderKey.id)
            .limit(1)
        )
        key = await session.scalar(query)
    if key is None and provider.type != "mock":
        raise AdminValidationError(
            f"provider {provider.name!r} has no enabled key to call it with", param="key_id"
        )
    return UpstreamAccess(
        provider_type=provider.type,
        provider_name=provider.name,
        base_url=base_url,
        secret=box.decrypt(key.secret_encrypted) if key is not None else "",
        api_version=provider.api_version,
        headers={str(k): str(v) for k, v in (provider.headers or {}).items()},
        key_id=key.id if key is not None else None,
        key_name=key.name if key is not None else None,
    )


@asynccontextmanager
async def _client(http: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    if http is not None:
        yield http
        return
    own = new_client_session()
    try:
        yield own
    finally:
        await own.close()


async def list_upstream_models(access: UpstreamAccess, http: aiohttp.ClientSession | None) -> list[str]:
    async with _client(http) as client:
        return await fetch_upstream_models(
            client,
            access.provider_type,
            access.base_url,
            access.secret,
            access.api_version,
            UPSTREAM_TIMEOUT,
            headers=access.headers,
        )


async def test_upstream(access: UpstreamAccess, http: aiohttp.ClientSession | None) -> ProviderTestOut:
    """Call the upstream's model list once; report whether it worked, how fast, and why not."""
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    models: list[str] = []
    try:
        models = await list_upstream_models(access, http)
        status = 200 if access.provider_type != "mock" else None
    except UpstreamError as exc:
        status = exc.upstream_status
        error = exc.message
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return ProviderTestOut(
        ok=error is None,
        latency_ms=latency_ms,
        status=status,
        error=error,
        key_id=access.key_id,
        key_name=access.key_name,
        model_count=len(models),
    )

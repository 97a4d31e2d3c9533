"""Asking an upstream which models it serves (the admin API's provider test and model sync).

One GET per provider kind, with that kind's own auth header and list shape:

- OpenAI and Azure's v1 API: ``GET {base}/models`` → ``{"data": [{"id": …}]}``
  (Azure with ``api_version`` set: ``GET {base}/openai/models?api-version=…``, same shape).
- Anthropic: ``GET {base}/v1/models`` with ``x-api-key`` and ``anthropic-version``; paged by
  ``after_id`` while ``has_more``.
- Gemini: ``GET {base}/v1beta/models`` with ``x-goog-api-key`` → ``{"models": [{"name": "models/…"}]}``;
  paged by ``pageToken`` while ``nextPageToken`` is present.

Failures become ``isthmus.errors.Upstream*`` exactly as on the relay path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from isthmus.errors import UpstreamConnectError, UpstreamError, UpstreamTimeoutError
from isthmus.providers.errors import http_error
from isthmus.providers.http import join_url
from isthmus.providers.mock_wire import MOCK_MODELS

ANTHROPIC_VERSION = "2023-06-01"
# A misbehaving upstream that always claims "more" must not keep us paging forever.
_MAX_PAGES = 20
_PAGE_SIZE = 1000
_MAX_BODY = 8 * 1024 * 1024


def mock_models() -> list[str]:
    """The mock provider's model list, the same one its own model-list endpoint answers."""
    return [info.id for info in MOCK_MODELS]


async def fetch_upstream_models(
    http: aiohttp.ClientSession,
    provider_type: str,
    base_url: str | None,
    secret: str,
    api_version: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - per HTTP call, handed to aiohttp
    *,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    """Model ids the upstream lists, in its order, without duplicates.

    ``headers`` are the provider's extra configured headers (an org id, a gateway token); auth headers
    are added on top so a stray configured ``authorization`` cannot replace the key.
    """
    if provider_type == "mock":
        return mock_models()
    if not base_url:
        raise UpstreamError(f"a provider of type {provider_type} needs a base_url to list models")
    extra = dict(headers or {})
    if provider_type == "openai":
        url = join_url(base_url, "/models")
        return await _openai_list(http, url, _merge(extra, {"authorization": f"Bearer {secret}"}), timeout)
    if provider_type == "azure":
        if api_version:
            base = base_url.rstrip("/")
            if not base.endswith("/openai"):
                base += "/openai"
            url = join_url(base, "/models", f"api-version={quote(api_version, safe='-._~')}")
        else:
            url = join_url(base_url, "/models")
        return await _openai_list(http, url, _merge(extra, {"api-key": secret}), timeout)
    if provider_type == "anthropic":
        auth = _merge(extra, {"x-api-key": secret, "anthropic-version": ANTHROPIC_VERSION})
        return await _anthropic_list(http, base_url, auth, timeout)
    if provider_type == "gemini":
        return await _gemini_list(http, base_url, _merge(extra, {"x-goog-api-key": secret}), timeout)
    raise UpstreamError(f"cannot list models for a provider of type {provider_type!r}")


def _merge(extra: Mapping[str, str], auth: Mapping[str, str]) -> dict[str, str]:
    # Header names are case-insensitive: drop a configured one that the auth header replaces.
    merged = {k: v for k, v in extra.items() if k.lower() not in auth}
    merged.update(auth)
    return merged


async def _get_json(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str], seconds: float
) -> dict[str, Any]:
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    send_headers = {"accept": "application/json", **headers}
    try:
        async with http.get(url, headers=send_headers, timeout=client_timeout, allow_redirects=False) as resp:
            body = await resp.content.read(_MAX_BODY + 1)
            response_headers = {k.lower(): v for k, v in resp.headers.items()}
            status = resp.status
    except TimeoutError as exc:
        raise UpstreamTimeoutError(f"the upstream did not answer within {seconds:g}s", phase="total") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"cannot reach the upstream: {exc}") from exc
    if not 200 <= status < 300:
        raise http_error(status, body, response_headers, _host(url))
    if len(body) > _MAX_BODY:
        raise UpstreamError("the upstream's model list is implausibly large", upstream_status=status)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            "the upstream's model list is not JSON", upstream_status=status, body=body[:500]
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError("the upstream's model list is not a JSON object", upstream_status=status)
    return data


def _host(url: str) -> str:
    try:
        return URL(url).host or url
    except ValueError:
        return url


def _ids(items: Any, field: str, strip_prefix: str = "") -> list[str]:
    if not isinstance(items, list):
        raise UpstreamError(f"the upstream's model list has no {field!r} entries")
    out: list[str] = []
    for item in items:
        value = item.get(field) if isinstance(item, dict) else None
        if isinstance(value, str) and value:
            out.append(value.removeprefix(strip_prefix))
    return out


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


async def _openai_list(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str], seconds: float
) -> list[str]:
    data = await _get_json(http, url, headers, seconds)
    return _unique(_ids(data.get("data"), "id"))


async def _anthropic_list(
    http: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], seconds: float
) -> list[str]:
    ids: list[str] = []
    after: str | None = None
    for _ in range(_MAX_PAGES):
        query = f"limit={_PAGE_SIZE}" + (f"&after_id={quote(after, safe='')}" if after else "")
        data = await _get_json(http, join_url(base_url, "/v1/models", query), headers, seconds)
        page = _ids(data.get("data"), "id")
        ids.extend(page)
        last = data.get("last_id")
        if not data.get("has_more") or not page or not isinstance(last, str) or last == after:
            break
        after = last
    return _unique(ids)


async def _gemini_list(
    http: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], seconds: float
) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        query = f"pageSize={_PAGE_SIZE}" + (f"&pageToken={quote(token, safe='')}" if token else "")
        data = await _get_json(http, join_url(base_url, "/v1beta/models", query), headers, seconds)
        ids.extend(_ids(data.get("models", []), "name", strip_prefix="models/"))
        next_token = data.get("nextPageToken")
        if not isinstance(next_token, str) or not next_token or next_token == token:
            break
        token = next_token
    return _unique(ids)

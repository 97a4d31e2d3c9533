"""What every HTTP provider shares: URLs, auth headers and timeouts over the process's upstream pool.

``new_client_session`` is the aiohttp session of the calls off the request path (admin, catalog).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import aiohttp

from isthmus.providers.base import Provider, UpstreamCall, UpstreamResponse, UpstreamTarget
from isthmus.providers.h1 import H1Pool, Timeouts


def new_client_session() -> aiohttp.ClientSession:
    """Keep-alive to every upstream, no global connection cap; for calls off the request path."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )


class HTTPProvider(Provider):
    """A provider reached over HTTP; subclasses say how URLs and auth look for their kind."""

    def __init__(self, pool: H1Pool) -> None:
        self._pool = pool
        self._timeouts: dict[tuple[float, float, float, bool], Timeouts] = {}

    @abstractmethod
    def url(self, call: UpstreamCall) -> str: ...

    @abstractmethod
    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]: ...

    def _timeout(self, target: UpstreamTarget, stream: bool) -> Timeouts:
        cache_key = (target.connect_timeout, target.idle_timeout, target.total_timeout, stream)
        timeouts = self._timeouts.get(cache_key)
        if timeouts is None:
            # A non-streamed answer arrives only once it is complete: no idle limit for it.
            timeouts = Timeouts(
                connect=target.connect_timeout,
                total=target.total_timeout,
                idle=target.idle_timeout if stream else None,
            )
            self._timeouts[cache_key] = timeouts
        return timeouts

    def request_headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = dict(call.headers)
        headers.update(call.target.headers)
        headers.update(self.auth_headers(call.target))
        if call.body is not None:
            headers["content-type"] = "application/json"
        return headers

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        target = call.target
        return await self._pool.request(
            call.method,
            self.url(call),
            self.request_headers(call),
            call.body,
            self._timeout(target, call.stream),
            target.provider_name,
        )


def join_url(base: str | None, path: str, query: str = "") -> str:
    url = (base or "").rstrip("/") + path
    return f"{url}?{query}" if query else url

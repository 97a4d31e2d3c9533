"""The shared HTTP machinery: one pooled aiohttp session per process, timeouts, error translation."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping

import aiohttp

from isthmus.errors import UpstreamConnectError, UpstreamTimeoutError
from isthmus.providers.base import Provider, UpstreamCall, UpstreamResponse, UpstreamTarget

# Response headers that describe the upstream connection or an encoding aiohttp already undid.
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "server", "date"}
)


class AiohttpResponse(UpstreamResponse):
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeoutError("upstream went idle mid-response", phase="idle") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"upstream connection broke: {exc}") from exc

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeoutError("upstream timed out reading the response", phase="total") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"upstream connection broke: {exc}") from exc

    async def aclose(self) -> None:
        self._resp.close()


def new_client_session() -> aiohttp.ClientSession:
    """The process-wide pool: keep-alive to every upstream, no global connection cap."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )


class HTTPProvider(Provider):
    """A provider reached over HTTP; subclasses say how URLs and auth look for their kind."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._timeouts: dict[tuple[float, float, float, bool], aiohttp.ClientTimeout] = {}

    @abstractmethod
    def url(self, call: UpstreamCall) -> str: ...

    @abstractmethod
    def auth_headers(self, target: UpstreamTarget) -> Mapping[str, str]: ...

    def _timeout(self, target: UpstreamTarget, stream: bool) -> aiohttp.ClientTimeout:
        cache_key = (target.connect_timeout, target.idle_timeout, target.total_timeout, stream)
        timeout = self._timeouts.get(cache_key)
        if timeout is None:
            # A non-streamed answer arrives only once it is complete: no idle limit before headers.
            timeout = aiohttp.ClientTimeout(
                total=target.total_timeout,
                sock_connect=target.connect_timeout,
                sock_read=target.idle_timeout if stream else None,
            )
            self._timeouts[cache_key] = timeout
        return timeout

    def request_headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = dict(call.headers)
        headers.update(call.target.headers)
        headers.update(self.auth_headers(call.target))
        if call.body is not None:
            headers["content-type"] = "application/json"
        headers["accept-encoding"] = "gzip, deflate, br"
        return headers

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        target = call.target
        try:
            resp = await self._session.request(
                call.method,
                self.url(call),
                data=call.body,
                headers=self.request_headers(call),
                timeout=self._timeout(target, call.stream),
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(
                f"upstream {target.provider_name} timed out before answering", phase="connect"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"cannot reach upstream {target.provider_name}: {exc}") from exc
        return AiohttpResponse(resp)


def join_url(base: str | None, path: str, query: str = "") -> str:
    url = (base or "").rstrip("/") + path
    return f"{url}?{query}" if query else url

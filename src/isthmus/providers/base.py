"""The one small interface every upstream kind implements.

A provider turns an :class:`UpstreamCall` (what to send, to which candidate) into an
:class:`UpstreamResponse` (status, headers, a byte stream). HTTP failures are translated into
``isthmus.errors.Upstream*`` here, at the edge where they enter, so routing reasons about types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from isthmus.ir.protocol import Operation, Protocol


@dataclass(slots=True)
class UpstreamTarget:
    """Where a call goes: the plain data of one routing candidate a provider needs."""

    provider_type: str
    provider_name: str
    base_url: str | None
    secret: str
    model: str  # upstream model name
    protocol: Protocol
    headers: Mapping[str, str] = field(default_factory=dict)  # extra headers configured on the provider
    api_version: str | None = None
    connect_timeout: float = 10.0
    idle_timeout: float = 120.0
    total_timeout: float = 900.0


@dataclass(slots=True)
class UpstreamCall:
    target: UpstreamTarget
    operation: Operation
    body: bytes | None
    stream: bool
    headers: Mapping[str, str]  # client headers worth forwarding (vendor flags), already filtered
    query: str = ""  # client query string worth forwarding (already filtered), without "?"
    resource_id: str | None = None  # e.g. the response id of GET/DELETE /v1/responses/{id}
    method: str = "POST"
    action: str | None = None  # a path-borne action the operation alone does not name (Gemini's ":method")


class UpstreamResponse(ABC):
    """A response whose body may still be arriving. Always ``aclose()`` it."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    @abstractmethod
    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (already decompressed)."""

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    @abstractmethod
    async def aclose(self) -> None: ...


class Provider(ABC):
    """Sends calls to one kind of upstream. Instances are shared by every candidate of that kind."""

    kind: str

    @abstractmethod
    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        """Start the call and return once response headers arrive.

        Raises ``UpstreamConnectError``/``UpstreamTimeoutError`` when no response starts; a non-2xx
        status is returned as a response (the relay reads its body, then raises ``UpstreamHTTPError``
        via :func:`isthmus.providers.errors.http_error`), so error bodies can be passed through.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release pooled resources at shutdown."""


class BytesResponse(UpstreamResponse):
    """A response whose body is already in memory (or produced by an async generator)."""

    def __init__(self, status: int, headers: Mapping[str, str], chunks: AsyncIterator[bytes] | bytes) -> None:
        self.status = status
        self.headers = headers
        self._chunks = chunks

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if isinstance(self._chunks, bytes):
            if self._chunks:
                yield self._chunks
            return
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        if not isinstance(self._chunks, bytes):
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()

"""The relay's upstream client: HTTP/1.1 over keep-alive connections, on httptools' parser.

Every relayed request makes one upstream call, so this client's cost is paid per request. aiohttp's
client spent ≈ 70–85 µs of CPU per call here against ≈ 20–27 µs for this one (``bench/client_cost.py``),
which is why the request path has its own. The admin API and the model
catalog, off the request path, keep aiohttp.

What it does: plain TCP or TLS (the system's trust store, or a given context), one LIFO list of idle
connections per origin, bodies framed by Content-Length, chunked or the connection's close, gzip and
deflate and brotli bodies, back-pressure on bodies the caller
reads slowly, connect / idle / total timeouts, and one retry on a new connection when a kept-alive
connection turns out to have been closed before an idempotent request was answered. What it does
not: proxies, HTTP/2, redirects. Failures leave as ``Upstream*`` errors, the provider layer's edge.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, cast
from urllib.parse import quote

import aiohappyeyeballs
import httptools

from isthmus.errors import UpstreamConnectError, UpstreamTimeoutError
from isthmus.providers.base import UpstreamResponse

# A POST the upstream may have started on is not sent twice; these are safe to repeat.
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "OPTIONS"})
# Unread body bytes held for a slow reader before the socket stops being read, and when it resumes.
PAUSE_ABOVE = 256 * 1024
RESUME_BELOW = 64 * 1024
MAX_IDLE_PER_ORIGIN = 256
# uvloop rounds timers to the millisecond: one may fire a little before the time it was set for.
TIMER_SLACK = 0.002
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried alongside
# Headers this client writes itself; a caller's copy would contradict the framing.
OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
# Asked for like the providers' own SDKs do; answers are decoded here, before anything reads them.
ACCEPT_ENCODING = "accept-encoding: gzip, deflate, br\r\n\r\n"
_PLAIN_TARGET = re.compile(r"[\x21-\x7e]*")
_TARGET_SAFE = "/?&=%:;@,+$!*'()~[]"

Origin = tuple[bool, str, int]  # (tls, host, port)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to connect; for the whole exchange; the longest silence (``None``: no limit)."""

    connect: float
    total: float
    idle: float | None


class StaleConnection(Exception):
    """A reused connection closed before any byte of the answer: the server dropped it while idle."""


@lru_cache(maxsize=256)
def _origin(scheme: str, netloc: str) -> tuple[Origin, str]:
    if scheme not in ("http", "https") or not netloc or "@" in netloc:
        raise ValueError(f"unsupported upstream URL: {scheme}://{netloc}")
    tls = scheme == "https"
    if netloc.startswith("["):  # IPv6 literal
        end = netloc.index("]")
        host, port_text = netloc[1:end], netloc[end + 2 :]
    else:
        host, _, port_text = netloc.partition(":")
    port = int(port_text) if port_text else (443 if tls else 80)
    explicit = bool(port_text) and port != (443 if tls else 80)
    host_header = netloc if explicit else f"[{host}]" if ":" in host else host
    return (tls, host, port), host_header


@lru_cache(maxsize=1024)  # a few URLs per provider and model, called on every request
def split_url(url: str) -> tuple[Origin, str, str]:
    """``https://h:1/p?q`` → ((True, "h", 1), "h:1", "/p?q")."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"unsupported upstream URL: {url!r}")
    cut = len(rest)
    for mark in ("/", "?"):
        at = rest.find(mark)
        if 0 <= at < cut:
            cut = at
    origin, host_header = _origin(scheme.lower(), rest[:cut])
    target = rest[cut:].partition("#")[0] or "/"
    if target[0] == "?":
        target = "/" + target
    if not _PLAIN_TARGET.fullmatch(target):
        target = quote(target, safe=_TARGET_SAFE)  # non-ASCII or spaces, e.g. from a model name
    return origin, host_header, target


def request_head(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n"]
    for name, value in headers.items():
        if name.lower() in OWN_HEADERS:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break or a colon where it cannot")
        lines.append(f"{name}: {value}\r\n")
    if body is not None:
        lines.append(f"content-length: {len(body)}\r\n")
    lines.append(ACCEPT_ENCODING)
    return "".join(lines).encode("latin-1")


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Brotli:
    def __init__(self) -> None:
        import brotli  # only once an upstream sends it

        self._decompressor = brotli.Decompressor()

    def decompress(self, data: bytes, /) -> bytes:
        out: bytes = self._decompressor.process(data)
        return out

    def flush(self) -> bytes:
        return b""

    @property
    def eof(self) -> bool:
        return bool(self._decompressor.is_finished())


def _decoder(encoding: str) -> _Decoder:
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # a zlib or gzip header, detected
    if encoding == "br":
        return _Brotli()
    raise ValueError(f"a body in an encoding it was not asked for: {encoding}")


class H1Response(UpstreamResponse):
    """An answer whose body the connection appends to; read it, or iterate it as it arrives."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_decode",
        "_done",
        "_error",
        "_size",
        "_waiter",
        "_whole",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._conn: _Connection | None = conn  # None once the body is complete or the exchange failed
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decode: _Decoder | None = None
        self._whole = False  # read() wants it all: never pause

    # -- fed by the connection --
    def _feed(self, data: bytes) -> None:
        if self._decode is not None:
            data = self._decode.decompress(data)
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > PAUSE_ABOVE and not self._whole and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        decode = self._decode
        if decode is not None:
            try:
                tail = decode.flush()
                if not decode.eof:
                    raise ValueError("it ends before the compressed stream does")
            except Exception as exc:  # zlib.error, brotli.error, truncation: the body is unusable
                self._fail(UpstreamConnectError(f"upstream sent a broken compressed body: {exc}"))
                return
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._conn = None
        self._wake()

    def _fail(self, error: Exception) -> None:
        if not self._done:
            self._error = error
            self._conn = None
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # -- the caller's side --
    async def iter_chunks(self) -> AsyncIterator[bytes]:
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                self._size -= len(chunk)
                if self._size < RESUME_BELOW and self._conn is not None:
                    self._conn.resume()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                await self._wait()

    async def read(self) -> bytes:
        self._whole = True
        if self._conn is not None:
            self._conn.resume()
        while not self._done and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return body

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:  # the body is still arriving: this connection cannot carry another request
            self._conn = None
            conn.close()


class _Connection(asyncio.Protocol):
    """One connection to one origin; carries one exchange at a time."""

    def __init__(self, pool: H1Pool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.origin = origin
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._paused = False
        # The exchange in flight
        self._label = ""
        self._response: H1Response | None = None
        self._head: asyncio.Future[None] | None = None  # until the response headers are in
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._informational = False
        self._to_close = False  # no Content-Length, not chunked: the body ends with the connection
        self._received = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = self._started = 0.0
        self._idle: float | None = None
        self._last_read = 0.0

    async def exchange(
        self, head: bytes, body: bytes | None, deadline: float, idle: float | None, label: str
    ) -> H1Response:
        transport = self._transport
        assert transport is not None
        response = self._response = H1Response(self)
        self._label = label
        self._received = False
        self._raw_headers = []
        self._deadline, self._idle = deadline, idle
        self._started = self._last_read = self._loop.time()
        self._arm()
        waiter = self._head = self._loop.create_future()
        if body:
            transport.writelines((head, body))  # one writev
        else:
            transport.write(head)
        try:
            await waiter
        except BaseException:
            # Cancelled or failed before the caller got the answer. If the whole answer had already
            # arrived, the connection is back in the pool, maybe carrying someone else's exchange.
            if self._response is response:
                self.close()
            raise
        return response

    @property
    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._last_read = self._loop.time()
            self._transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self._transport is not None:
                self._transport.close()
            self._pool.forget(self)

    # -- timeouts: one timer per exchange, moved forward lazily rather than per read --
    def _arm(self) -> None:
        when = self._deadline if self._idle is None else min(self._deadline, self._last_read + self._idle)
        self._timer = self._loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time() + TIMER_SLACK
        waiting_head = self._head is not None and not self._head.done()
        if now >= self._deadline:
            what = "did not answer" if waiting_head else "did not finish its answer"
            error = UpstreamTimeoutError(
                f"upstream {self._label} {what} within {self._deadline - self._started:g}s",
                phase="connect" if waiting_head else "total",
            )
        elif self._idle is not None and now >= self._last_read + self._idle and not self._paused:
            error = UpstreamTimeoutError(
                f"upstream {self._label} went silent for {self._idle:g}s",
                phase="connect" if waiting_head else "idle",
            )
        else:
            if self._paused:  # a silence of our own making (a slow reader) is not the upstream's
                self._last_read = now
            self._arm()
            return
        self._fail(error)
        self.close()

    def _fail(self, error: Exception) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._response is not None:
            self._response._fail(error)
        self._response = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the connection's framing is lost
            self.close()
            return
        self._received = True
        if self._idle is not None:
            self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            cause = exc.__context__ or exc  # a callback's own error (an unknown encoding, bad gzip) says more
            self._fail(UpstreamConnectError(f"upstream {self._label} sent a malformed answer: {cause}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._pool.forget(self)
        response = self._response
        if response is None:
            return
        head = self._head
        if head is not None and not head.done():
            if self.reused and not self._received:
                self._fail(StaleConnection())
            else:
                reason = f": {exc}" if exc else ""
                self._fail(
                    UpstreamConnectError(
                        f"upstream {self._label} closed the connection before answering{reason}"
                    )
                )
        elif self._to_close and exc is None:
            self._response = None
            response._finish()
        else:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamConnectError(f"upstream {self._label} connection broke mid-answer{reason}"))

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        if self._response is None:  # an answer nobody asked for, in the same read as the last one
            raise ValueError("bytes after the end of the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self._informational = True
            self._raw_headers = []
            return
        response = self._response
        assert response is not None
        headers = response.headers
        for name, value in self._raw_headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        response.status = status
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding and encoding != "identity":
            response._decode = _decoder(encoding)
        self._to_close = (
            status not in (204, 304)
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        self._response = None
        self._cancel_timer()
        if response is not None:
            response._finish()
        if self._paused:
            self.resume()
        if not self._to_close and self._parser.should_keep_alive() and not self.closed:
            self._pool.release(self)
        else:
            self.close()


class H1Pool:
    """Kept-alive connections per origin, shared by every upstream call of the process."""

    def __init__(self, *, keepalive: float = 60.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
        label: str,
    ) -> H1Response:
        """Send one request; return once the answer's headers are in (its body may still be arriving)."""
        try:
            if method == "HEAD":  # its answer has no body whatever its headers say; nothing sends one
                raise ValueError("HEAD is not supported")
            origin, host, target = split_url(url)
            head = request_head(method, target, host, headers, body)
        except ValueError as exc:
            raise UpstreamConnectError(f"cannot call upstream {label}: {exc}") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        conn = self._take_idle(origin, loop.time())
        if conn is not None:
            try:
                return await conn.exchange(head, body, deadline, timeouts.idle, label)
            except StaleConnection:
                if method not in IDEMPOTENT_METHODS:
                    raise UpstreamConnectError(
                        f"upstream {label} closed a kept-alive connection before answering"
                    ) from None
        conn = await self._connect(origin, timeouts.connect, label)
        return await conn.exchange(head, body, deadline, timeouts.idle, label)

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self._keepalive:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, seconds: float, label: str) -> _Connection:
        loop = asyncio.get_running_loop()
        tls, host, port = origin
        context = self._tls_context() if tls else None
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(seconds):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                # Both address families raced (RFC 8305), as aiohttp did: an unreachable IPv6 route,
                # common in containers, must not cost the whole connect timeout.
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
                )
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin, loop),
                    sock=sock,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            if sock is not None:
                sock.close()
            raise UpstreamTimeoutError(
                f"could not connect to upstream {label} within {seconds:g}s", phase="connect"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            if sock is not None:
                sock.close()
            raise UpstreamConnectError(f"cannot reach upstream {label}: {exc}") from exc
        self._open.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # built on first use: loading the trust store costs time and memory
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    def release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        now = conn.idle_since = asyncio.get_running_loop().time()
        while idle and now - idle[0].idle_since >= self._keepalive:  # LIFO: the oldest sit at the bottom
            idle.pop(0).close()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

"""The relay's HTTP/1.1 upstream client against raw TCP (and TLS) servers on 127.0.0.1 that write
exactly the bytes each case needs: framing, keep-alive, compression, timeouts, broken peers."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import brotli
import pytest
import trustme

from isthmus.errors import UpstreamConnectError, UpstreamTimeoutError
from isthmus.providers.h1 import PAUSE_ABOVE, H1Pool, Timeouts, split_url

TIMEOUTS = Timeouts(connect=5, total=10, idle=None)
STREAM_TIMEOUTS = Timeouts(connect=5, total=10, idle=5)


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name:
                return value.strip()
        return None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request = Request(head, b"")
    length = int(request.header("content-length") or 0)
    request.body = await reader.readexactly(length)
    return request


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class RawServer:
    url: str
    connections: int = 0
    requests: list[Request] = field(default_factory=list)


@asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    state = RawServer("")

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(reader, writer, state.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def serving(state_requests: list[Request], reply: Callable[[Request], bytes]) -> Handler:
    """Answer every request on the connection with ``reply(request)``, keeping it open."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while (request := await read_request(reader)) is not None:
            state_requests.append(request)
            writer.write(reply(request))
            await writer.drain()

    return handler


@pytest.fixture
async def pool() -> AsyncIterator[H1Pool]:
    pool = H1Pool()
    yield pool
    await pool.aclose()


# --- framing and keep-alive -----------------------------------------------------------------------


async def test_requests_reuse_one_kept_alive_connection(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(
        serving(seen, lambda r: answer(b"echo:" + r.body, "content-type: text/plain"))
    ) as srv:
        for n in range(3):
            resp = await pool.request(
                "POST", f"{srv.url}/v1/chat?x=1", {"x-vendor": "yes"}, b"body%d" % n, TIMEOUTS, "up"
            )
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/plain"
            assert await resp.read() == b"echo:body%d" % n
            await resp.aclose()
    assert srv.connections == 1
    first = seen[0]
    assert first.request_line == "POST /v1/chat?x=1 HTTP/1.1"
    assert first.header("host") == srv.url.removeprefix("http://")
    assert first.header("content-length") == "5"
    assert first.header("x-vendor") == "yes"
    assert first.header("accept-encoding") == "gzip, deflate, br"


async def test_a_get_sends_no_body_and_no_length(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"{}"))) as srv:
        resp = await pool.request("GET", f"{srv.url}/v1/responses/r1", {}, None, TIMEOUTS, "up")
        assert await resp.read() == b"{}"
    assert seen[0].request_line == "GET /v1/responses/r1 HTTP/1.1"
    assert seen[0].header("content-length") is None


async def test_chunked_body_arrives_piece_by_piece(pool: H1Pool) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
        )
        writer.write(b"6\r\ndata: \r\n3\r\none\r\n")
        await writer.drain()
        await release.wait()  # the client must see "one" before the rest exists
        writer.write(b"4\r\n two\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as srv:
        resp = await pool.request("POST", f"{srv.url}/s", {}, b"{}", STREAM_TIMEOUTS, "up")
        got = b""
        async for chunk in resp.iter_chunks():
            got += chunk
            if got == b"data: one":
                release.set()
        assert got == b"data: one two"
        await resp.aclose()


async def test_body_without_length_ends_with_the_connection_and_is_not_reused(pool: H1Pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"whole": ')
        await writer.drain()
        writer.write(b"true}")
        await writer.drain()

    async with raw_server(handler) as srv:
        for _ in range(2):
            resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
            assert await resp.read() == b'{"whole": true}'
    assert srv.connections == 2


async def test_connection_close_answer_is_not_reused(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"ok", "connection: close"))) as srv:
        for _ in range(2):
            resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
            assert await resp.read() == b"ok"
    assert srv.connections == 2


async def test_informational_answer_is_skipped(pool: H1Pool) -> None:
    seen: list[Request] = []
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"done")
    async with raw_server(serving(seen, lambda r: reply)) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        assert resp.status == 200
        assert await resp.read() == b"done"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_body_is_decoded(pool: H1Pool, encoding: str) -> None:
    plain = b'{"text": "' + b"squeeze " * 500 + b'"}'
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](plain)
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(packed, f"content-encoding: {encoding}"))) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        assert await resp.read() == plain
        streamed = await pool.request("POST", srv.url, {}, b"{}", STREAM_TIMEOUTS, "up")
        assert b"".join([c async for c in streamed.iter_chunks()]) == plain


async def test_an_encoding_not_asked_for_is_an_upstream_error(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"xx", "content-encoding: zstd"))) as srv:
        with pytest.raises(UpstreamConnectError, match="zstd"):
            await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")


async def test_a_truncated_compressed_body_is_an_upstream_error(pool: H1Pool) -> None:
    packed = gzip.compress(b'{"text": "' + b"squeeze " * 500 + b'"}')

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        # No length: the body ends with the connection, here half-way through the gzip stream.
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\r\n" + packed[: len(packed) // 2])
        await writer.drain()

    async with raw_server(handler) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        with pytest.raises(UpstreamConnectError, match="broken compressed body"):
            await resp.read()


# --- broken peers ----------------------------------------------------------------------------------


async def test_a_name_with_several_addresses_connects_to_the_one_listening(pool: H1Pool) -> None:
    """``localhost`` may resolve to ::1 before 127.0.0.1; the server listens on IPv4 only."""
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"found"))) as srv:
        url = srv.url.replace("127.0.0.1", "localhost")
        resp = await pool.request("POST", url, {}, b"{}", TIMEOUTS, "up")
        assert await resp.read() == b"found"
    assert seen[0].header("host") == url.removeprefix("http://")


async def test_refused_connection_is_a_connect_error(pool: H1Pool) -> None:
    async with raw_server(serving([], lambda r: b"")) as srv:
        url = srv.url
    with pytest.raises(UpstreamConnectError, match="cannot reach upstream up"):
        await pool.request("POST", url, {}, b"{}", TIMEOUTS, "up")


async def test_malformed_answer_is_a_connect_error(pool: H1Pool) -> None:
    async with raw_server(serving([], lambda r: b"SMTP ready\r\n\r\n")) as srv:
        with pytest.raises(UpstreamConnectError, match="malformed"):
            await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")


async def test_cut_mid_body_raises_after_what_arrived(pool: H1Pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async with raw_server(handler) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", STREAM_TIMEOUTS, "up")
        got = b""
        with pytest.raises(UpstreamConnectError, match="broke mid-answer"):
            async for chunk in resp.iter_chunks():
                got += chunk
        assert got == b"partial"


async def test_closed_before_answering_is_a_connect_error(pool: H1Pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)

    async with raw_server(handler) as srv:
        with pytest.raises(UpstreamConnectError, match="before answering"):
            await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")


def _drop_second_request_on_first_connection(seen: list[Request]) -> Handler:
    """The first connection answers once, then closes on the next request unanswered (a server
    dropping an idle keep-alive connection just as it is reused); later connections behave."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            if index == 1 and len(seen) == 2:
                return
            writer.write(answer(b"ok"))
            await writer.drain()

    return handler


async def test_a_dropped_kept_alive_connection_is_retried_for_a_get(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(_drop_second_request_on_first_connection(seen)) as srv:
        for _ in range(2):
            resp = await pool.request("GET", srv.url, {}, None, TIMEOUTS, "up")
            assert await resp.read() == b"ok"
    assert srv.connections == 2
    assert len(seen) == 3


async def test_a_dropped_kept_alive_connection_is_not_retried_for_a_post(pool: H1Pool) -> None:
    """The upstream may have started on it: a second POST could be billed twice; failover decides."""
    seen: list[Request] = []
    async with raw_server(_drop_second_request_on_first_connection(seen)) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        assert await resp.read() == b"ok"
        with pytest.raises(UpstreamConnectError, match="kept-alive connection"):
            await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
    assert len(seen) == 2


async def test_bytes_after_the_answer_retire_the_connection(pool: H1Pool) -> None:
    """A server that sends more than the answer it was asked for: the extra must not be read as the
    start of the next request's answer."""
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"ok") + b"HTTP/1.1 2")) as srv:
        for _ in range(2):
            resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
            assert await resp.read() == b"ok"
    assert srv.connections == 2


async def test_head_is_refused(pool: H1Pool) -> None:
    with pytest.raises(UpstreamConnectError, match="HEAD"):
        await pool.request("HEAD", "http://127.0.0.1:9/", {}, None, TIMEOUTS, "up")


async def test_header_with_a_line_break_is_refused_before_sending(pool: H1Pool) -> None:
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"ok"))) as srv:
        with pytest.raises(UpstreamConnectError, match="line break"):
            await pool.request("POST", srv.url, {"x-a": "1\r\nx-injected: 2"}, b"{}", TIMEOUTS, "up")
    assert seen == []


# --- timeouts, cancellation, back-pressure -------------------------------------------------------


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await read_request(reader)
    await reader.read()


async def test_no_answer_within_total_is_a_timeout(pool: H1Pool) -> None:
    async with raw_server(_silent) as srv:
        with pytest.raises(UpstreamTimeoutError) as caught:
            await pool.request("POST", srv.url, {}, b"{}", Timeouts(connect=5, total=0.2, idle=None), "up")
    assert caught.value.phase == "connect"


async def test_silence_mid_stream_is_an_idle_timeout(pool: H1Pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", Timeouts(connect=5, total=10, idle=0.2), "up")
        got = []
        with pytest.raises(UpstreamTimeoutError) as caught:
            async for chunk in resp.iter_chunks():
                got.append(chunk)
        assert got == [b"first"]
        assert caught.value.phase == "idle"


async def test_cancelled_before_the_answer_the_connection_is_dropped(pool: H1Pool) -> None:
    """Closing is how the upstream learns to stop generating (and billing) an answer nobody wants."""
    dropped = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            if index == 1:
                if await asyncio.wait_for(reader.read(), 2) == b"":
                    dropped.set()
                return
            writer.write(answer(b"conn%d" % index))
            await writer.drain()

    async with raw_server(handler) as srv:
        task = asyncio.create_task(pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(dropped.wait(), 2)
        resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        assert await resp.read() == b"conn2"


async def test_closing_mid_body_drops_the_connection(pool: H1Pool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with raw_server(handler) as srv:
        resp = await pool.request("POST", srv.url, {}, b"{}", STREAM_TIMEOUTS, "up")
        async for _ in resp.iter_chunks():
            break
        await resp.aclose()
        resp = await pool.request("POST", srv.url, {}, b"{}", STREAM_TIMEOUTS, "up")
        assert await resp.read() == b"one"
    assert srv.connections == 2


async def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte(pool: H1Pool) -> None:
    body = bytes(range(256)) * (128 * 1024)  # 32 MiB: more than the kernel's socket buffers hold
    sent_all = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 64 * 1024):
            writer.write(body[at : at + 64 * 1024])
            await writer.drain()
        sent_all.set()

    async with raw_server(handler) as srv:
        # An idle limit shorter than the reader's pause: silence the reader caused is not a timeout.
        resp = await pool.request("POST", srv.url, {}, b"{}", Timeouts(connect=5, total=10, idle=0.2), "up")
        await asyncio.sleep(0.6)  # read nothing while the server pushes
        assert not sent_all.is_set()  # the kernel buffers filled: the socket is not being read
        assert resp._size <= PAUSE_ABOVE + 256 * 1024
        got = bytearray()
        async for chunk in resp.iter_chunks():
            got += chunk
        assert bytes(got) == body
        assert sent_all.is_set()


# --- TLS -------------------------------------------------------------------------------------------


async def test_tls_with_a_trusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    seen: list[Request] = []
    async with raw_server(serving(seen, lambda r: answer(b"secure")), tls=server_context) as srv:
        pool = H1Pool(ssl_context=client_context)
        try:
            for _ in range(2):
                resp = await pool.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
                assert await resp.read() == b"secure"
        finally:
            await pool.aclose()
        assert srv.connections == 1
        untrusting = H1Pool()  # the system trust store does not know this CA
        try:
            with pytest.raises(UpstreamConnectError, match="certificate"):
                await untrusting.request("POST", srv.url, {}, b"{}", TIMEOUTS, "up")
        finally:
            await untrusting.aclose()


# --- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "host", "target"),
    [
        ("https://api.openai.com/v1/chat", (True, "api.openai.com", 443), "api.openai.com", "/v1/chat"),
        ("http://h:8080", (False, "h", 8080), "h:8080", "/"),
        ("http://h:80/p?q=1", (False, "h", 80), "h", "/p?q=1"),
        ("http://h?q=1", (False, "h", 80), "h", "/?q=1"),
        ("http://[::1]:9000/x", (False, "::1", 9000), "[::1]:9000", "/x"),
        ("https://h/models/é x:go", (True, "h", 443), "h", "/models/%C3%A9%20x:go"),
    ],
)
def test_split_url(url: str, origin: tuple[bool, str, int], host: str, target: str) -> None:
    assert split_url(url) == (origin, host, target)


@pytest.mark.parametrize("url", ["ftp://h/x", "h/x", "http://user:pw@h/x"])
async def test_unsupported_url_is_a_connect_error(pool: H1Pool, url: str) -> None:
    with pytest.raises(UpstreamConnectError, match="unsupported upstream URL"):
        await pool.request("POST", url, {}, b"{}", TIMEOUTS, "up")

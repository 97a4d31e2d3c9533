"""The disconnect watch: no task at all for a request shorter than its delay; after it, a client
that leaves is noticed."""

from __future__ import annotations

import asyncio

from isthmus.relay.asgi import DisconnectWatch, Message


class _Receive:
    """An ASGI ``receive`` that counts its calls and answers what is put in its queue."""

    def __init__(self) -> None:
        self.calls = 0
        self.queue: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self) -> Message:
        self.calls += 1
        return await self.queue.get()


async def test_a_short_request_never_reads_receive() -> None:
    receive, gone = _Receive(), []
    watch = DisconnectWatch(receive, lambda: gone.append(True), delay=0.05)
    await asyncio.sleep(0.01)
    watch.stop()
    await asyncio.sleep(0.08)
    assert receive.calls == 0 and not gone


async def test_a_disconnect_after_the_delay_is_noticed() -> None:
    receive, gone = _Receive(), []
    watch = DisconnectWatch(receive, lambda: gone.append(True), delay=0.01)
    await asyncio.sleep(0.03)
    assert receive.calls == 1 and not gone  # watching, the client still there
    await receive.queue.put({"type": "http.disconnect"})
    await asyncio.sleep(0.01)
    assert gone == [True]
    watch.stop()


async def test_stop_ends_the_watching_task() -> None:
    receive = _Receive()
    watch = DisconnectWatch(receive, lambda: None, delay=0)
    await asyncio.sleep(0.01)
    assert receive.calls == 1
    watch.stop()
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

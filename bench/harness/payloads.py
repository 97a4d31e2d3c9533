"""What the fake upstream answers, what the clients send, and how an answer is checked.

The fake upstream serves fixed bodies by path, so it needs no request parsing (plain nginx can do it):
``/unary/...`` answers JSON, ``/stream/...`` answers an SSE body, for OpenAI chat and Anthropic Messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAYLOAD_DIR = Path(__file__).resolve().parent.parent / "payloads"

# path on the fake upstream → (payload file, content type)
UPSTREAM_ROUTES: dict[str, tuple[str, str]] = {
    "/unary/v1/chat/completions": ("openai_chat_response.json", "application/json"),
    "/stream/v1/chat/completions": ("openai_chat_stream.sse", "text/event-stream"),
    "/unary/v1/messages": ("anthropic_messages_response.json", "application/json"),
    "/stream/v1/messages": ("anthropic_messages_stream.sse", "text/event-stream"),
}

MODES = ("unary", "stream")


def payload(name: str) -> bytes:
    return (PAYLOAD_DIR / name).read_bytes()


def expected_text() -> str:
    """The assistant text every target must hand back, streamed or not, converted or not."""
    data = json.loads(payload("openai_chat_response.json"))
    return str(data["choices"][0]["message"]["content"])


def request_body(mode: str, model: str) -> bytes:
    """The OpenAI chat request a client sends (``stream: true`` in stream mode), naming ``model``."""
    name = "openai_chat_stream_request.json" if mode == "stream" else "openai_chat_request.json"
    body = json.loads(payload(name))
    body["model"] = model
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def check_answer(mode: str, status: int, body: bytes) -> Check:
    """Is this a correct OpenAI chat answer carrying the expected text? (Catches fast errors.)"""
    if status != 200:
        return Check(False, f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
    want = expected_text()
    try:
        text = _stream_text(body) if mode == "stream" else _unary_text(body)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return Check(False, f"unreadable answer ({exc}): {body[:300].decode('utf-8', 'replace')}")
    if text != want:
        return Check(False, f"wrong text: {text[:120]!r}")
    return Check(True, "ok")


def _unary_text(body: bytes) -> str:
    data: Any = json.loads(body)
    if data.get("object") != "chat.completion":
        raise ValueError(f"object is {data.get('object')!r}")
    return str(data["choices"][0]["message"]["content"])


def _stream_text(body: bytes) -> str:
    parts: list[str] = []
    done = False
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    parts.append(piece)
    if not done:
        raise ValueError("no data: [DONE]")
    return "".join(parts)

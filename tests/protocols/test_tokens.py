"""Local token counting: the offline BPE, media rules and whole requests."""

from __future__ import annotations

import base64
import socket
import struct
import zlib
from typing import Any

import pytest

from isthmus.ir import (
    DocumentPart,
    FunctionTool,
    ImagePart,
    MediaSource,
    Message,
    Protocol,
    Request,
    Role,
    SourceKind,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
)
from isthmus.protocols import tokens


def png(width: int, height: int) -> bytes:
    """A real (tiny-payload) PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(data: bytes, media_type: str = "image/png") -> ImagePart:
    return ImagePart(source=MediaSource(kind=SourceKind.BASE64, data=b64(data), media_type=media_type))


def test_the_encoding_is_openai_cl100k_and_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the tokenizer tried to open a socket")

    tokens.encoding.cache_clear()
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    enc = tokens.encoding()
    # Token ids published in tiktoken's own tests for cl100k_base.
    assert enc.encode("hello world") == [15339, 1917]
    assert enc.decode(enc.encode("naïve café 🚀")) == "naïve café 🚀"
    assert tokens.count_text("") == 0
    assert tokens.count_text("<|endoftext|>") > 1  # special spellings are plain text here


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(640, 480), (640, 480)),
        (jpeg(1920, 1080), (1920, 1080)),
        (b"GIF89a" + struct.pack("<HH", 33, 17) + b"\x00" * 8, (33, 17)),
        (
            b"RIFF\x00\x00\x00\x00WEBPVP8X"
            + b"\x00" * 8
            + (299).to_bytes(3, "little")
            + (99).to_bytes(3, "little"),
            (300, 100),
        ),
        (b"not an image", None),
    ],
)
def test_image_size_from_headers(data: bytes, size: tuple[int, int] | None) -> None:
    assert tokens.image_size(data) == size


def test_image_rules_per_protocol() -> None:
    small, large = image(png(200, 200)), image(png(2000, 1500))
    url = ImagePart(source=MediaSource(kind=SourceKind.URL, data="https://example.com/a.png"))

    def count(part: ImagePart, protocol: Protocol) -> int:
        req = Request(messages=[Message(role=Role.USER, parts=[part])])
        empty = Request(messages=[Message(role=Role.USER, parts=[])])
        return tokens.count_request_tokens(req, protocol) - tokens.count_request_tokens(empty, protocol)

    # Anthropic: width*height/750, after scaling the long edge to 1568, capped at ~1600.
    assert count(small, Protocol.ANTHROPIC) == 54
    assert count(large, Protocol.ANTHROPIC) == tokens.ANTHROPIC_IMAGE_MAX_TOKENS
    assert count(url, Protocol.ANTHROPIC) == tokens.ANTHROPIC_IMAGE_MAX_TOKENS
    # Gemini: 258 for a small image, else 258 per 768px tile.
    assert count(small, Protocol.GEMINI) == 258
    assert count(large, Protocol.GEMINI) == 3 * 2 * 258


def test_pdf_pages_are_counted_per_page() -> None:
    pdf = (
        b"%PDF-1.4\n"
        + b"".join(b"1 0 obj << /Type /Page >> endobj\n" for _ in range(3))
        + b"<< /Type /Pages >>"
    )
    doc = DocumentPart(
        source=MediaSource(kind=SourceKind.BASE64, data=b64(pdf), media_type="application/pdf")
    )
    req = Request(messages=[Message(role=Role.USER, parts=[doc])])
    base = tokens.count_request_tokens(Request(messages=[Message(role=Role.USER)]), Protocol.GEMINI)
    assert tokens.count_request_tokens(req, Protocol.GEMINI) - base == 3 * 258


def test_a_request_counts_every_prompt_piece() -> None:
    weather = FunctionTool(
        name="get_weather",
        description="Current weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    conversation = [
        Message(role=Role.USER, parts=[TextPart(text="What is the weather in Paris today?")]),
        Message(
            role=Role.ASSISTANT,
            parts=[
                ThinkingPart(text="long private reasoning " * 50, signature="sig", origin=Protocol.ANTHROPIC),
                ToolCallPart(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),
            ],
        ),
        Message(
            role=Role.USER,
            parts=[
                ToolResultPart(call_id="toolu_1", name="get_weather", content=[TextPart(text="18C, sunny")])
            ],
        ),
    ]
    bare = Request(system=[TextPart(text="You are terse.")], messages=conversation[:1])
    full = Request(system=[TextPart(text="You are terse.")], messages=conversation, tools=[weather])

    bare_count = tokens.count_request_tokens(bare)
    text_only = tokens.count_text("You are terse.") + tokens.count_text("What is the weather in Paris today?")
    assert text_only < bare_count < text_only + 20

    full_count = tokens.count_request_tokens(full)
    tool_schema = tokens.count_text(str(weather.parameters))
    assert full_count > bare_count + tokens.ANTHROPIC_TOOL_PROMPT["auto"] + tool_schema // 2
    # Earlier turns' reasoning is not part of the prompt.
    thinking = conversation[1].parts[0]
    assert isinstance(thinking, ThinkingPart)
    assert full_count < bare_count + tokens.ANTHROPIC_TOOL_PROMPT["auto"] + tokens.count_text(thinking.text)

    forced = Request(
        messages=conversation, tools=[weather], tool_choice=ToolChoice(mode=ToolChoiceMode.TOOL, name="x")
    )
    auto = Request(messages=conversation, tools=[weather])
    assert tokens.count_request_tokens(auto) - tokens.count_request_tokens(forced) == 346 - 313
    # Gemini adds no tool-use system prompt.
    assert tokens.count_request_tokens(auto, Protocol.GEMINI) < tokens.count_request_tokens(auto)


def test_count_endpoints_answer_from_their_own_bodies() -> None:
    anthropic_body = {
        "model": "claude",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "What is the weather in Paris today?"}],
    }
    gemini_request = {
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris today?"}]}],
    }
    claude = tokens.count_tokens_request(Protocol.ANTHROPIC, anthropic_body)
    wrapped = tokens.count_tokens_request(
        Protocol.GEMINI, {"generateContentRequest": {"model": "m", **gemini_request}}
    )
    plain = tokens.count_tokens_request(Protocol.GEMINI, gemini_request)
    text = tokens.count_text("You are terse.") + tokens.count_text("What is the weather in Paris today?")
    assert text < claude == wrapped == plain < text + 20
    assert tokens.count_tokens_answer(Protocol.ANTHROPIC, claude) == {"input_tokens": claude}
    answer = tokens.count_tokens_answer(Protocol.GEMINI, plain)
    assert answer["totalTokens"] == plain and answer["promptTokensDetails"][0]["tokenCount"] == plain

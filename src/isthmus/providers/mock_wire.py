"""How the mock provider's answers look on each protocol's wire (see ``providers.mock``).

Shapes follow the official SDKs' type definitions: every field those types require is present,
streams send the same event sequence the real APIs send.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from isthmus.errors import IsthmusError
from isthmus.ir.protocol import Protocol
from isthmus.protocols import anthropic, gemini, openai_chat, openai_common, openai_responses
from isthmus.protocols.base import ModelInfo, as_mapping
from isthmus.protocols.sse import DONE_EVENT, SSEParser, encode_event

if TYPE_CHECKING:
    from isthmus.providers.mock import MockAnswer, MockKnobs, MockRequest

Frame = tuple[bytes, bool]  # (one SSE event, whether it carries content)

MOCK_MODELS = (
    ModelInfo("mock-gpt", 1_700_000_000, "isthmus-mock", 128_000, 16_384, "Mock GPT"),
    ModelInfo("mock-claude", 1_700_000_000, "isthmus-mock", 200_000, 64_000, "Mock Claude"),
    ModelInfo("mock-gemini", 1_700_000_000, "isthmus-mock", 1_048_576, 65_536, "Mock Gemini"),
)


def estimate_tokens(text: str) -> int:
    """The mock's tokenizer: a quarter of the characters, rounded up."""
    return math.ceil(len(text) / 4)


def _hex() -> str:
    return uuid.uuid4().hex


def _split(text: str, parts: int = 3) -> list[str]:
    """Split text into up to ``parts`` non-empty pieces (tool arguments stream in pieces)."""
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def error_body(protocol: Protocol, err: IsthmusError) -> bytes:
    if protocol is Protocol.ANTHROPIC:
        return anthropic.error_body(err)
    if protocol is Protocol.GEMINI:
        return gemini.error_body(err)
    return openai_common.error_body(err)


def stream_error_event(protocol: Protocol, err: IsthmusError, sequence_number: int) -> bytes:
    if protocol is Protocol.ANTHROPIC:
        return anthropic.stream_error_event(err)
    if protocol is Protocol.GEMINI:
        return gemini.stream_error_event(err)
    if protocol is Protocol.OPENAI_RESPONSES:
        return openai_responses.stream_error_event(err, sequence_number=sequence_number)
    return openai_chat.stream_error_event(err)


def model_list(protocol: Protocol) -> bytes:
    if protocol is Protocol.ANTHROPIC:
        return anthropic.encode_model_list(MOCK_MODELS)
    if protocol is Protocol.GEMINI:
        return gemini.encode_model_list(MOCK_MODELS)
    return openai_common.encode_model_list(MOCK_MODELS)


def count_tokens(protocol: Protocol, req: MockRequest) -> bytes:
    if protocol is Protocol.ANTHROPIC:
        return orjson.dumps({"input_tokens": req.prompt_tokens})
    if protocol is Protocol.GEMINI:
        details = [{"modality": "TEXT", "tokenCount": req.prompt_tokens}]
        return orjson.dumps({"totalTokens": req.prompt_tokens, "promptTokensDetails": details})
    return orjson.dumps({"object": "response.input_tokens", "input_tokens": req.prompt_tokens})


# --- embeddings -----------------------------------------------------------------------------------


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _dimensions(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 4096 else 8


def _openai_inputs(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [" ".join(str(v) for v in value)]  # one input given as token ids
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
    return []


def embeddings(protocol: Protocol, body: Mapping[str, Any], model: str) -> bytes:
    if protocol is Protocol.GEMINI:
        if isinstance(body.get("requests"), list):  # batchEmbedContents, what google-genai calls
            vectors = []
            for request in body["requests"]:
                request = as_mapping(request)
                text = _parts_text(as_mapping(request.get("content")).get("parts"))
                dims = _dimensions(request.get("outputDimensionality"))
                vectors.append({"values": embedding_vector(text, dims)})
            return orjson.dumps({"embeddings": vectors})
        text = _parts_text(as_mapping(body.get("content")).get("parts"))
        dims = _dimensions(body.get("outputDimensionality"))
        return orjson.dumps({"embedding": {"values": embedding_vector(text, dims)}})
    inputs = _openai_inputs(body.get("input"))
    dims = _dimensions(body.get("dimensions"))
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dims)
        encoded: object = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(estimate_tokens(text) for text in inputs)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _parts_text(parts: object) -> str:
    if not isinstance(parts, list):
        return ""
    return "\n".join(
        str(p["text"]) for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str)
    )


# --- OpenAI Chat Completions --------------------------------------------------------------------


def _chat_finish(answer: MockAnswer) -> str:
    if answer.tool_call is not None:
        return "tool_calls"
    return "length" if answer.truncated else "stop"


def _chat_body(answer: MockAnswer, req: MockRequest, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.tool_call is not None else answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_call is not None:
        call = answer.tool_call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {
        "id": f"chatcmpl-{_hex()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _chat_finish(answer)}
        ],
        "usage": openai_chat.usage_to_wire(answer.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }


def _chat_stream(answer: MockAnswer, req: MockRequest, model: str) -> list[Frame]:
    include_usage = as_mapping(req.body.get("stream_options")).get("include_usage") is True
    base: dict[str, Any] = {
        "id": f"chatcmpl-{_hex()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return encode_event(body)

    frames: list[Frame] = [(chunk({"role": "assistant", "content": "", "refusal": None}), False)]
    frames += [(chunk({"content": piece}), True) for piece in answer.pieces]
    if answer.tool_call is not None:
        call = answer.tool_call
        head = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames.append((chunk({"tool_calls": [head]}), True))
        for piece in _split(call.arguments):
            frames.append((chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), True))
    frames.append((chunk({}, _chat_finish(answer)), False))
    if include_usage:
        usage_chunk = {**base, "choices": [], "usage": openai_chat.usage_to_wire(answer.usage)}
        frames.append((encode_event(usage_chunk), False))
    frames.append((DONE_EVENT, False))
    return frames


# --- OpenAI Responses ---------------------------------------------------------------------------


class _Ids:
    """Ids shared by a response's body and its stream events."""

    def __init__(self) -> None:
        self.response = f"resp_{_hex()}"
        self.reasoning = f"rs_{_hex()}"
        self.message = f"msg_{_hex()}"
        self.function = f"fc_{_hex()}"
        self.created = int(time.time())


def _reasoning_item(answer: MockAnswer, req: MockRequest, ids: _Ids, done: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": ids.reasoning,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "".join(answer.reasoning)}] if done else [],
    }
    if "reasoning.encrypted_content" in (req.body.get("include") or ()):
        item["encrypted_content"] = base64.b64encode(b"mock-reasoning:" + ids.reasoning.encode()).decode()
    return item


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(answer: MockAnswer, ids: _Ids, done: bool) -> dict[str, Any]:
    return {
        "id": ids.message,
        "type": "message",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": [_text_part(answer.text)] if done else [],
    }


def _function_item(answer: MockAnswer, ids: _Ids, done: bool) -> dict[str, Any]:
    assert answer.tool_call is not None
    call = answer.tool_call
    return {
        "id": ids.function,
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "arguments": call.arguments if done else "",
        "call_id": call.id,
        "name": call.name,
    }


def _response_output(answer: MockAnswer, req: MockRequest, ids: _Ids) -> list[dict[str, Any]]:
    output = []
    if answer.reasoning:
        output.append(_reasoning_item(answer, req, ids, done=True))
    if answer.tool_call is not None:
        output.append(_function_item(answer, ids, done=True))
    elif answer.pieces:
        output.append(_message_item(answer, ids, done=True))
    return output


def _response_object(
    answer: MockAnswer, req: MockRequest, model: str, ids: _Ids, *, final: bool
) -> dict[str, Any]:
    body = req.body
    status = ("incomplete" if answer.truncated else "completed") if final else "in_progress"
    return {
        "id": ids.response,
        "object": "response",
        "created_at": ids.created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if final else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if final and answer.truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": _response_output(answer, req, ids) if final else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": as_mapping(body.get("reasoning")).get("effort"), "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": openai_responses.usage_to_wire(answer.usage) if final else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _responses_stream(answer: MockAnswer, req: MockRequest, model: str) -> list[Frame]:
    ids = _Ids()
    frames: list[Frame] = []

    def add(kind: str, content: bool, **fields: Any) -> None:
        frames.append((encode_event({"type": kind, "sequence_number": len(frames), **fields}, kind), content))

    add("response.created", False, response=_response_object(answer, req, model, ids, final=False))
    add("response.in_progress", False, response=_response_object(answer, req, model, ids, final=False))
    index = 0
    if answer.reasoning:
        item_id, summary = ids.reasoning, "".join(answer.reasoning)
        part = {"type": "summary_text", "text": ""}
        at = {"item_id": item_id, "output_index": index, "summary_index": 0}
        add(
            "response.output_item.added",
            False,
            output_index=index,
            item=_reasoning_item(answer, req, ids, False),
        )
        add("response.reasoning_summary_part.added", False, part=part, **at)
        for piece in answer.reasoning:
            add("response.reasoning_summary_text.delta", True, delta=piece, **at)
        add("response.reasoning_summary_text.done", False, text=summary, **at)
        add("response.reasoning_summary_part.done", False, part={**part, "text": summary}, **at)
        add(
            "response.output_item.done",
            False,
            output_index=index,
            item=_reasoning_item(answer, req, ids, True),
        )
        index += 1
    if answer.tool_call is not None:
        at = {"item_id": ids.function, "output_index": index}
        add("response.output_item.added", True, output_index=index, item=_function_item(answer, ids, False))
        for piece in _split(answer.tool_call.arguments):
            add("response.function_call_arguments.delta", True, delta=piece, **at)
        add("response.function_call_arguments.done", False, arguments=answer.tool_call.arguments, **at)
        add("response.output_item.done", False, output_index=index, item=_function_item(answer, ids, True))
    elif answer.pieces:
        at = {"item_id": ids.message, "output_index": index, "content_index": 0}
        add("response.output_item.added", False, output_index=index, item=_message_item(answer, ids, False))
        add("response.content_part.added", False, part=_text_part(""), **at)
        for piece in answer.pieces:
            add("response.output_text.delta", True, delta=piece, logprobs=[], **at)
        add("response.output_text.done", False, text=answer.text, logprobs=[], **at)
        add("response.content_part.done", False, part=_text_part(answer.text), **at)
        add("response.output_item.done", False, output_index=index, item=_message_item(answer, ids, True))
    final = _response_object(answer, req, model, ids, final=True)
    add("response.incomplete" if answer.truncated else "response.completed", False, response=final)
    return frames


# --- Anthropic Messages -------------------------------------------------------------------------


def _anthropic_stop(answer: MockAnswer) -> str:
    if answer.tool_call is not None:
        return "tool_use"
    return "max_tokens" if answer.truncated else "end_turn"


def _signature(answer: MockAnswer) -> str:
    digest = hashlib.sha256("".join(answer.reasoning).encode()).digest()
    return base64.b64encode(b"mock-signature:" + digest).decode()


def _anthropic_body(answer: MockAnswer, req: MockRequest, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.reasoning:
        content.append(
            {"type": "thinking", "thinking": "".join(answer.reasoning), "signature": _signature(answer)}
        )
    if answer.tool_call is not None:
        call = answer.tool_call
        tool_id = "toolu_" + call.id.removeprefix("call_")
        content.append(
            {"type": "tool_use", "id": tool_id, "name": call.name, "input": orjson.loads(call.arguments)}
        )
    elif answer.pieces:
        content.append({"type": "text", "text": answer.text})
    return {
        "id": f"msg_{_hex()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop(answer),
        "stop_sequence": None,
        "usage": anthropic.usage_to_wire(answer.usage),
    }


def _anthropic_stream(answer: MockAnswer, req: MockRequest, model: str) -> list[Frame]:
    body = _anthropic_body(answer, req, model)
    frames: list[Frame] = []

    def add(kind: str, content: bool, **fields: Any) -> None:
        frames.append((encode_event({"type": kind, **fields}, kind), content))

    start_usage = {**body["usage"], "output_tokens": min(1, answer.usage.output_tokens)}
    add("message_start", False, message={**body, "content": [], "stop_reason": None, "usage": start_usage})
    for index, block in enumerate(body["content"]):

        def start(content_block: dict[str, Any], content: bool, index: int = index) -> None:
            add("content_block_start", content, index=index, content_block=content_block)
            if index == 0:  # the API pings once, right after the first block opens
                frames.append((encode_event({"type": "ping"}, "ping"), False))

        def delta(delta: dict[str, Any], index: int = index) -> None:
            add("content_block_delta", True, index=index, delta=delta)

        if block["type"] == "thinking":
            start({"type": "thinking", "thinking": "", "signature": ""}, False)
            for piece in answer.reasoning:
                delta({"type": "thinking_delta", "thinking": piece})
            delta({"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "tool_use":
            start({**block, "input": {}}, True)
            for piece in _split(orjson.dumps(block["input"]).decode()):
                delta({"type": "input_json_delta", "partial_json": piece})
        else:
            start({"type": "text", "text": ""}, False)
            for piece in answer.pieces:
                delta({"type": "text_delta", "text": piece})
        add("content_block_stop", False, index=index)
    usage = body["usage"]
    delta_usage = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    add(
        "message_delta",
        False,
        delta={"stop_reason": body["stop_reason"], "stop_sequence": None},
        usage=delta_usage,
    )
    add("message_stop", False)
    return frames


# --- Gemini -------------------------------------------------------------------------------------


def _gemini_finish(answer: MockAnswer) -> str:
    return "MAX_TOKENS" if answer.truncated else "STOP"


def _gemini_parts(answer: MockAnswer) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if answer.reasoning:
        parts.append({"text": "".join(answer.reasoning), "thought": True})
    if answer.tool_call is not None:
        call = answer.tool_call
        function_call = {"id": call.id, "name": call.name, "args": orjson.loads(call.arguments)}
        parts.append({"functionCall": function_call, "thoughtSignature": _signature(answer)})
    elif answer.pieces:
        parts.append({"text": answer.text})
    return parts or [{"text": ""}]


def _gemini_chunk(
    parts: list[dict[str, Any]], usage: dict[str, Any], model: str, response_id: str, finish: str | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def _gemini_body(answer: MockAnswer, req: MockRequest, model: str) -> dict[str, Any]:
    usage = gemini.usage_to_wire(answer.usage)
    return _gemini_chunk(_gemini_parts(answer), usage, model, _hex()[:22], _gemini_finish(answer))


def _gemini_stream(answer: MockAnswer, req: MockRequest, model: str) -> list[Frame]:
    response_id = _hex()[:22]
    final_usage = gemini.usage_to_wire(answer.usage)
    # Until the end, chunks report the prompt side only, as the API does.
    partial = {
        k: v for k, v in final_usage.items() if k not in ("candidatesTokenCount", "thoughtsTokenCount")
    }
    partial["totalTokenCount"] = answer.usage.prompt_tokens
    frames: list[Frame] = []
    for piece in answer.reasoning:
        chunk = _gemini_chunk([{"text": piece, "thought": True}], partial, model, response_id, None)
        frames.append((encode_event(chunk), True))
    if answer.tool_call is not None:
        parts = [p for p in _gemini_parts(answer) if "functionCall" in p]
        chunk = _gemini_chunk(parts, final_usage, model, response_id, _gemini_finish(answer))
        frames.append((encode_event(chunk), True))
        return frames
    last = len(answer.pieces) - 1
    for i, piece in enumerate(answer.pieces):
        finish = _gemini_finish(answer) if i == last else None
        chunk = _gemini_chunk(
            [{"text": piece}], final_usage if i == last else partial, model, response_id, finish
        )
        frames.append((encode_event(chunk), True))
    if not answer.pieces:
        chunk = _gemini_chunk([{"text": ""}], final_usage, model, response_id, _gemini_finish(answer))
        frames.append((encode_event(chunk), False))
    return frames


# --- dispatch -----------------------------------------------------------------------------------

_BODIES: dict[Protocol, Callable[[MockAnswer, MockRequest, str], dict[str, Any]]] = {
    Protocol.OPENAI_CHAT: _chat_body,
    Protocol.OPENAI_RESPONSES: lambda a, r, m: _response_object(a, r, m, _Ids(), final=True),
    Protocol.ANTHROPIC: _anthropic_body,
    Protocol.GEMINI: _gemini_body,
}
_STREAMS: dict[Protocol, Callable[[MockAnswer, MockRequest, str], list[Frame]]] = {
    Protocol.OPENAI_CHAT: _chat_stream,
    Protocol.OPENAI_RESPONSES: _responses_stream,
    Protocol.ANTHROPIC: _anthropic_stream,
    Protocol.GEMINI: _gemini_stream,
}


def render_body(protocol: Protocol, answer: MockAnswer, req: MockRequest, model: str) -> bytes:
    return orjson.dumps(_BODIES[protocol](answer, req, model))


def render_stream(protocol: Protocol, answer: MockAnswer, req: MockRequest, model: str) -> list[Frame]:
    return _STREAMS[protocol](answer, req, model)


async def play(protocol: Protocol, frames: list[Frame], knobs: MockKnobs) -> AsyncIterator[bytes]:
    """Yield the frames one by one, with the knobs' pacing and failure modes."""
    content_total = sum(1 for _, is_content in frames if is_content)
    cut_after = max(1, content_total // 2)
    sent = 0
    for position, (data, is_content) in enumerate(frames):
        if knobs.fail == "cut" and sent >= cut_after:
            return
        if is_content:
            if knobs.fail == "stream_error":
                err = IsthmusError("mock stream error: overloaded", status=529)
                parser = SSEParser()  # Responses sends two events: yield each on its own
                for event in parser.feed(stream_error_event(protocol, err, position)):
                    yield event.raw
                return
            if sent == 0:
                if knobs.ttft:
                    await asyncio.sleep(knobs.ttft / 1000)
            elif knobs.tps:
                await asyncio.sleep(1 / knobs.tps)
            sent += 1
        yield data

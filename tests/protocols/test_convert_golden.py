"""Golden conversions: recorded client requests, upstream answers and upstream streams converted to
every protocol with a codec, compared with reviewed expected files under ``golden/``.

Inputs are ``golden/<kind>/<case>.<protocol>.json|sse``; each conversion's expected output is
``<case>.<protocol>.to-<target>.<ext>``, and for requests the conversion back to the source protocol
is ``<case>.<protocol>.to-<target>.to-<protocol>.json`` (round trip). After a deliberate change, run
with ``ISTHMUS_UPDATE_GOLDEN=1`` to rewrite the expected files, then review their diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.ir import Protocol
from isthmus.protocols.convert import StreamTranslator, convert_request, convert_response
from isthmus.protocols.sse import SSEParser

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ISTHMUS_UPDATE_GOLDEN") == "1"
# Targets whose codecs this suite covers.
TARGETS = (Protocol.ANTHROPIC, Protocol.OPENAI_CHAT, Protocol.OPENAI_RESPONSES, Protocol.GEMINI)
UPSTREAM_MODEL = "upstream-model"
CLIENT_MODEL = "client-model"
_CREATED = re.compile(rb'"(created|created_at|completed_at)":\d+')
_CLOCK_FIELDS = ("created_at", "completed_at")  # Response objects stamp the time they were made


def _inputs(kind: str, suffix: str) -> list[tuple[Path, Protocol]]:
    found = []
    for path in sorted((GOLDEN / kind).glob(f"*{suffix}")):
        stem = path.name[: -len(suffix)]
        if ".to-" in stem:
            continue
        found.append((path, Protocol(stem.split(".", 1)[1])))
    return found


def _cases(kind: str, suffix: str) -> list[Any]:
    return [
        pytest.param(path, src, dst, id=f"{path.name}->{dst}")
        for path, src in _inputs(kind, suffix)
        for dst in TARGETS
        if src in TARGETS
    ]


def _expected(path: Path, dst: Protocol, suffix: str, *more: Protocol) -> Path:
    stem = path.name[: -len(suffix)] + f".to-{dst}" + "".join(f".to-{p}" for p in more)
    return path.with_name(stem + suffix)


def _check_json(actual: dict[str, Any], expected_path: Path) -> None:
    actual = {k: (0 if k in _CLOCK_FIELDS and isinstance(v, int) else v) for k, v in actual.items()}
    text = json.dumps(actual, indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        expected_path.write_text(text)
    assert expected_path.exists(), f"missing golden {expected_path.name}; run with ISTHMUS_UPDATE_GOLDEN=1"
    assert json.loads(expected_path.read_text()) == actual


def _check_bytes(actual: bytes, expected_path: Path) -> None:
    normalised = _CREATED.sub(rb'"\1":0', actual)
    if UPDATE:
        expected_path.write_bytes(normalised)
    assert expected_path.exists(), f"missing golden {expected_path.name}; run with ISTHMUS_UPDATE_GOLDEN=1"
    assert expected_path.read_bytes() == normalised


@pytest.mark.parametrize(("path", "src", "dst"), _cases("requests", ".json"))
def test_request_golden(path: Path, src: Protocol, dst: Protocol) -> None:
    body = json.loads(path.read_text())
    stream = body.get("stream") is True
    converted = convert_request(src, dst, body, model=UPSTREAM_MODEL, stream=stream)
    _check_json(converted, _expected(path, dst, ".json"))
    if dst is not src:
        back = convert_request(dst, src, converted, model=str(body.get("model", CLIENT_MODEL)), stream=stream)
        _check_json(back, _expected(path, dst, ".json", src))


@pytest.mark.parametrize(("path", "src", "dst"), _cases("responses", ".json"))
def test_response_golden(path: Path, src: Protocol, dst: Protocol) -> None:
    upstream = json.loads(path.read_text())
    converted = convert_response(src, dst, upstream, model=CLIENT_MODEL)
    if "created" in converted:  # an answer without a creation time is stamped with the current one
        created = converted["created"]
        assert isinstance(created, int) and created > 0
        converted["created"] = upstream.get("created", 0)
    _check_json(converted, _expected(path, dst, ".json"))


def translate(src: Protocol, dst: Protocol, chunks: list[bytes]) -> tuple[bytes, StreamTranslator]:
    translator = StreamTranslator(src, dst, model=CLIENT_MODEL, include_usage=True)
    parser = SSEParser()
    out = [translator.feed(event) for chunk in chunks for event in parser.feed(chunk)]
    out.extend(translator.feed(event) for event in parser.flush())
    out.append(translator.finish())
    return b"".join(out), translator


@pytest.mark.parametrize(("path", "src", "dst"), _cases("streams", ".sse"))
def test_stream_golden(path: Path, src: Protocol, dst: Protocol) -> None:
    out, translator = translate(src, dst, [path.read_bytes()])
    _check_bytes(out, _expected(path, dst, ".sse"))
    assert translator.saw_content
    assert translator.completed != (translator.upstream_error is not None)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_stream_translation_ignores_chunk_boundaries(data: st.DataObject) -> None:
    """The upstream's TCP chunking must not change a byte of what the client gets."""
    path, src = data.draw(st.sampled_from([i for i in _inputs("streams", ".sse") if i[1] in TARGETS]))
    dst = data.draw(st.sampled_from(TARGETS))
    raw = path.read_bytes()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=30)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    whole, _ = translate(src, dst, [raw])
    split, _ = translate(src, dst, chunks)
    assert _CREATED.sub(b"", split) == _CREATED.sub(b"", whole)

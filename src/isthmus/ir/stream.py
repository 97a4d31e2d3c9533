"""Neutral stream events: what a ``StreamDecoder`` emits and a ``StreamEncoder`` consumes.

A stream is: ``MessageStart``, then for each output part ``PartStart`` → deltas → ``PartStop``
(parts may interleave only where the wire interleaves them), any number of ``UsageUpdate``, and
one ``Finish``; or a ``StreamError`` at any point, after which nothing follows.

``index`` is the part's position in the answer (0, 1, 2, ... in ``PartStart`` order, the same as
in ``Response.parts``); it is not a wire index (Chat's ``tool_calls[].index`` counts only tool
calls: encoders map between the two).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from isthmus.errors import IsthmusError
from isthmus.ir.model import Part, StopReason
from isthmus.ir.usage import Usage


@dataclass(slots=True, kw_only=True)
class MessageStart:
    """The answer begins. ``usage`` holds what is known up front (Anthropic reports the prompt
    side here), else zeros. ``created`` is unix seconds (0 when the wire does not say)."""

    id: str
    model: str
    usage: Usage = field(default_factory=Usage)
    created: int = 0


@dataclass(slots=True, kw_only=True)
class PartStart:
    """A part opens. ``part`` carries what is known when it opens and no streamed content:
    ``TextPart(text="")``, ``ThinkingPart(text="", origin=...)``, ``ToolCallPart(id, name,
    arguments="")``; parts that arrive whole (``RedactedThinkingPart``, ``OpaquePart``, images)
    are complete here and are followed directly by their ``PartStop``."""

    index: int
    part: Part


@dataclass(slots=True, kw_only=True)
class TextDelta:
    index: int
    text: str


@dataclass(slots=True, kw_only=True)
class ThinkingDelta:
    """Reasoning text for a ``ThinkingPart`` (or summary text for an ``EncryptedReasoningPart``)."""

    index: int
    text: str


@dataclass(slots=True, kw_only=True)
class SignatureDelta:
    """The opaque signature of a part: a ``ThinkingPart``'s ``signature``, or the Gemini
    ``thought_signature`` of a text or tool-call part. Replaces, not appends."""

    index: int
    signature: str


@dataclass(slots=True, kw_only=True)
class ToolArgumentsDelta:
    """A fragment of a tool call's ``arguments`` JSON text; fragments concatenate."""

    index: int
    fragment: str


@dataclass(slots=True, kw_only=True)
class PartStop:
    """A part closes. ``part`` is the completed part when the wire hands it over whole at the end
    (Responses ``output_item.done``, with ``encrypted_content``); encoders that need end-of-part
    data read it from here, the rest ignore it."""

    index: int
    part: Part | None = None


@dataclass(slots=True, kw_only=True)
class UsageUpdate:
    """Usage so far; counts are cumulative (a later update replaces an earlier one)."""

    usage: Usage


@dataclass(slots=True, kw_only=True)
class Finish:
    """The answer ended normally. ``usage`` is the final usage when the wire gave it here, else
    None (the last ``UsageUpdate`` stands)."""

    stop_reason: StopReason
    usage: Usage | None = None
    stop_sequence: str | None = None


@dataclass(slots=True, kw_only=True)
class StreamError:
    """The upstream reported an error inside the stream (usually an ``UpstreamStreamError``)."""

    error: IsthmusError


StreamEvent = (
    MessageStart
    | PartStart
    | TextDelta
    | ThinkingDelta
    | SignatureDelta
    | ToolArgumentsDelta
    | PartStop
    | UsageUpdate
    | Finish
    | StreamError
)

"""Rules for reasoning across protocols: who may receive which opaque payload, effort ↔ budget,
and the envelope that carries a foreign reasoning part through a client and back.

Which payloads go where (the rule every encoder follows)
--------------------------------------------------------
A reasoning part's opaque payload (Anthropic ``signature``/redacted ``data``, Gemini
``thoughtSignature``, OpenAI ``encrypted_content``) is sent upstream only to the protocol in its
``origin``: anything else would be rejected or, worse, misread. To another protocol a reasoning part
is dropped, except that an encoder whose wire has a plain-text reasoning slot for history (Chat
``reasoning_content`` of compatible vendors) may carry its text there when ``origin`` is itself.

The envelope
------------
When a gateway answer in protocol C comes from an upstream of protocol U != C, the client will send
the reasoning back on its next turn through C's own opaque slot (Anthropic ``signature``, Gemini
``thoughtSignature``, Responses ``encrypted_content``), and that turn may again go to U. So the
C-encoder seals the U-made part into that slot with :func:`seal`, and the C-decoder opens it with
:func:`unseal`, restoring the part and its origin exactly; a U-encoder then sends it home intact.
Sealed values are standard base64 (valid in Gemini's ``bytes`` field) of a magic prefix plus
compact JSON; they carry no secrets beyond what the client already holds.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from isthmus.ir.model import EncryptedReasoningPart, ReasoningPart, RedactedThinkingPart, ThinkingPart
from isthmus.ir.protocol import Protocol

# Provider families: a payload made by one protocol of a family is meaningless to another family.
FAMILY: dict[Protocol, str] = {
    Protocol.OPENAI_CHAT: "openai",
    Protocol.OPENAI_RESPONSES: "openai",
    Protocol.ANTHROPIC: "anthropic",
    Protocol.GEMINI: "gemini",
}


def family(protocol: Protocol) -> str:
    return FAMILY[protocol]


# Effort name → thinking budget (tokens), for wires that want a budget when the caller gave an
# effort. Budgets are at least Anthropic's minimum of 1024.
EFFORT_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}

# Budget → effort: the first effort whose ceiling holds the budget (ascending); above them all, "max".
_BUDGET_EFFORT: tuple[tuple[int, str], ...] = (
    (1024, "minimal"),
    (4096, "low"),
    (12288, "medium"),
    (24576, "high"),
    (49152, "xhigh"),
)


def budget_for_effort(effort: str) -> int:
    """A budget for an effort name; unknown names get the ``medium`` budget."""
    return EFFORT_BUDGET.get(effort, EFFORT_BUDGET["medium"])


def effort_for_budget(budget: int, *, allowed: tuple[str, ...] = ("low", "medium", "high")) -> str:
    """The effort closest to a budget, limited to the names the target accepts (in ascending order)."""
    wanted = "max"
    for ceiling, name in _BUDGET_EFFORT:
        if budget <= ceiling:
            wanted = name
            break
    order = list(EFFORT_BUDGET)
    rank = order.index(wanted)
    # Same or nearest lower effort the target knows; failing that, the lowest it knows.
    for name in reversed(order[: rank + 1]):
        if name in allowed:
            return name
    return allowed[0]


# --- envelope ---------------------------------------------------------------------------------

_MAGIC = b"ISTHMUS\x01"
_MAGIC_B64 = base64.b64encode(_MAGIC[:6]).decode()  # every sealed value starts with this text


@dataclass(slots=True, frozen=True)
class Sealed:
    """What an envelope held. ``attach`` is set for a Gemini ``thoughtSignature`` that sat on a text
    or function-call part: ``"next"`` or ``"previous"`` says which neighbouring text/tool-call part of
    the same message gets ``part.signature`` back as its ``thought_signature`` (the decoder emits no
    part for the envelope itself). None for a reasoning part that stands on its own."""

    part: ReasoningPart
    attach: str | None = None


def seal(part: ReasoningPart, *, attach: str | None = None, with_text: bool = False) -> str:
    """``with_text`` seals a ThinkingPart's text too, for carriers whose own text does not come back
    (a Gemini client keeps ``thoughtSignature`` on its function calls but may drop thought parts)."""
    payload: dict[str, Any] = {"o": str(part.origin)}
    if isinstance(part, ThinkingPart):
        # The text normally travels in the carrier's own text field; only the signature is sealed.
        payload["t"] = "thinking"
        payload["s"] = part.signature
        if with_text:
            payload["x"] = part.text
    elif isinstance(part, RedactedThinkingPart):
        payload["t"] = "redacted"
        payload["d"] = part.data
    else:
        payload["t"] = "encrypted"
        payload["i"] = part.id
        payload["e"] = part.encrypted_content
        payload["sm"] = part.summary
        payload["c"] = part.content
    if attach is not None:
        payload["a"] = attach
    return base64.b64encode(_MAGIC + orjson.dumps(payload)).decode()


def is_sealed(value: str) -> bool:
    return value.startswith(_MAGIC_B64)


def unseal(value: str, *, text: str = "") -> Sealed | None:
    """Open an envelope; ``text`` is the carrier's reasoning text (restored into a ThinkingPart unless
    the envelope sealed its own, see ``seal(with_text=True)``). None when ``value`` is not an envelope
    (a genuine signature of the carrier's own protocol)."""
    if not is_sealed(value):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_MAGIC):
        return None
    try:
        payload = orjson.loads(raw[len(_MAGIC) :])
        origin = Protocol(payload["o"])
        kind = payload["t"]
        part: ReasoningPart
        if kind == "thinking":
            signature = payload.get("s")
            sealed_text = payload.get("x")
            part = ThinkingPart(
                text=sealed_text if isinstance(sealed_text, str) else text,
                signature=signature if isinstance(signature, str) else None,
                origin=origin,
            )
        elif kind == "redacted":
            part = RedactedThinkingPart(data=str(payload["d"]), origin=origin)
        elif kind == "encrypted":
            part = EncryptedReasoningPart(
                id=payload.get("i"),
                encrypted_content=payload.get("e"),
                summary=[str(s) for s in payload.get("sm") or []],
                content=[str(c) for c in payload.get("c") or []],
                origin=origin,
            )
        else:
            return None
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
        return None
    attach = payload.get("a")
    return Sealed(part=part, attach=attach if attach in ("next", "previous") else None)

"""OpenAI Responses items as stored and listed: the canonical shape of input items.

A request's ``input`` may be a bare string or items in their short forms (``EasyInputMessage``
with string content, items without ``id``/``status``). ``GET /v1/responses/{id}/input_items``
lists them in their long forms (``ResponseItem``: every item has an ``id`` and a ``status``,
message content is a list of parts), so the gateway stores them that way once, at save time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from isthmus.errors import InvalidRequestError

# Id prefixes the API uses for items it lists.
_ID_PREFIXES: dict[str, str] = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}

INCLUDE_ENCRYPTED_REASONING = "reasoning.encrypted_content"


def new_item_id(item_type: str) -> str:
    return f"{_ID_PREFIXES.get(item_type, 'item')}_{uuid.uuid4().hex}"


def _content_parts(content: object, role: str) -> list[Any]:
    """Message content as a list of parts; a string becomes one text part of the role's kind."""
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": content}
        if kind == "output_text":
            part["annotations"] = []
        return [part]
    if isinstance(content, list):
        return list(content)
    raise InvalidRequestError("message content must be a string or a list of parts", param="input")


def canonical_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """One input item in its listed form: ``type`` set, an ``id``, a ``status``, list content."""
    out = dict(item)
    item_type = out.get("type")
    if item_type is None and "role" in out:  # EasyInputMessage may omit "type"
        item_type = out["type"] = "message"
    if not isinstance(item_type, str):
        raise InvalidRequestError("every input item needs a type", param="input")
    if item_type == "item_reference":
        return out  # resolved against stored items by the caller, never stored as such
    if item_type == "message":
        role = out.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequestError(f"unsupported message role {role!r}", param="input")
        out["content"] = _content_parts(out.get("content"), role)
    if not isinstance(out.get("id"), str) or not out["id"]:
        out["id"] = new_item_id(item_type)
    out.setdefault("status", "completed")
    return out


def canonical_input(value: object) -> list[dict[str, Any]]:
    """A request's ``input`` (string, items, or absent) as a list of canonical items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [canonical_item({"type": "message", "role": "user", "content": value})]
    if not isinstance(value, list):
        raise InvalidRequestError("input must be a string or a list of items", param="input")
    items: list[dict[str, Any]] = []
    for entry in value:
        if not isinstance(entry, Mapping):
            raise InvalidRequestError("every input item must be an object", param="input")
        items.append(canonical_item(entry))
    return items


def resolve_references(
    items: Sequence[Mapping[str, Any]], known: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Replace ``item_reference`` entries by the referenced items from ``known``."""
    if not any(item.get("type") == "item_reference" for item in items):
        return [dict(item) for item in items]
    by_id = {item["id"]: item for item in known if isinstance(item.get("id"), str)}
    resolved: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") != "item_reference":
            resolved.append(dict(item))
            continue
        target = by_id.get(str(item.get("id")))
        if target is None:
            raise InvalidRequestError(
                f"Item with id '{item.get('id')}' not found in this conversation.", param="input"
            )
        resolved.append(dict(target))
    return resolved


def client_item(item: Mapping[str, Any], include: Iterable[str]) -> dict[str, Any]:
    """An item as shown to a client that did or did not ask for encrypted reasoning."""
    out = dict(item)
    if out.get("type") == "reasoning" and INCLUDE_ENCRYPTED_REASONING not in include:
        out.pop("encrypted_content", None)
    return out

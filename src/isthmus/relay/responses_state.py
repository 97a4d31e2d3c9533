"""Responses API state for answers the gateway produced itself (the upstream spoke another protocol).

OpenAI keeps a conversation server-side when ``store`` is true (the default), so a later request
may send only ``previous_response_id`` and its new input; ``GET /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items`` and ``DELETE`` read it back. When the upstream has no
Responses API, the gateway is that server. Each stored response keeps this turn's input items and
its output items (reasoning items with their private payloads included, so thinking signatures
survive the turn), and points to its predecessor; a continuation replays the chain oldest first.

A stored response belongs to the gateway key that created it: every read filters on the key, and
another key's id reads as not found, exactly like one that never existed.

How the relay uses it, for a Responses front door whose chosen upstream is not Responses:
1. ``prepared = await state.prepare(body, key_id)`` before decoding the request: it expands
   ``previous_response_id`` and ``item_reference`` items into ``prepared.body``.
2. After the answer is complete and before the client sees its terminal event (the stream's
   ``response.completed``/``incomplete``/``failed``, or the non-streamed body), when
   ``prepared.store`` is true: ``await state.save(response, key_id=..., prepared=prepared)`` with
   the final Response object (private reasoning payloads included). Awaiting it there means a
   follow-up sent as soon as the client has the answer always finds it, whichever process serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.errors import InvalidRequestError, NotFoundError
from isthmus.protocols.openai_responses_items import (
    canonical_input,
    client_item,
    resolve_references,
)
from isthmus.store.tables import RESPONSE_STATUSES, StoredResponse, utcnow

DEFAULT_RETENTION = timedelta(days=30)  # what OpenAI keeps stored responses for
MAX_CHAIN = 10_000  # turns followed back through previous_response_id (a guard, not a real limit)
DEFAULT_PAGE = 20
MAX_PAGE = 100

# Response fields kept in their own columns; the rest of the object is stored as is.
_SPLIT_FIELDS = ("output", "usage")


@dataclass(slots=True)
class PreparedRequest:
    """A Responses request body made self-contained.

    ``body`` has ``input`` = the stored conversation (oldest first) followed by this turn's items,
    with ``item_reference`` entries resolved and ``previous_response_id`` removed; ``turn_items``
    are this turn's items alone, in stored form (what ``save`` keeps).
    """

    body: dict[str, Any]
    turn_items: list[dict[str, Any]]
    previous_response_id: str | None = None
    store: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(
        f"Response with id '{response_id}' not found.", param="response_id", code="not_found"
    )


class ResponsesState:
    """Reads and writes stored responses; one instance per process, safe for concurrent use."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        retention: timedelta = DEFAULT_RETENTION,
        max_chain: int = MAX_CHAIN,
    ) -> None:
        self._sessions = sessions
        self._retention = retention
        self._max_chain = max_chain

    # --- the request path ----------------------------------------------------------------------

    async def prepare(self, body: Mapping[str, Any], key_id: int) -> PreparedRequest:
        """Expand ``previous_response_id`` and ``item_reference`` items (raises NotFoundError for
        an unknown, expired or foreign previous response, InvalidRequestError for a bad input)."""
        turn = canonical_input(body.get("input"))
        previous = body.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise InvalidRequestError("previous_response_id must be a string", param="previous_response_id")
        history = await self.load_for_continuation(previous, key_id) if previous else []
        turn = resolve_references(turn, history)
        expanded = dict(body)
        expanded.pop("previous_response_id", None)
        expanded["input"] = [*history, *turn]
        return PreparedRequest(
            body=expanded,
            turn_items=turn,
            previous_response_id=previous or None,
            store=body.get("store") is not False,
            history=history,
        )

    async def load_for_continuation(self, previous_response_id: str, key_id: int) -> list[dict[str, Any]]:
        """The conversation up to and including ``previous_response_id``: each stored turn's input
        items then output items, oldest turn first. A chain whose older links were deleted or have
        expired starts at the oldest link still stored."""
        rows = await self._chain(previous_response_id, key_id)
        if not rows:
            raise NotFoundError(
                f"Previous response with id '{previous_response_id}' not found.",
                param="previous_response_id",
            )
        items: list[dict[str, Any]] = []
        for input_items, output_items in rows:
            items.extend(input_items)
            items.extend(output_items)
        return items

    async def save(
        self,
        response: Mapping[str, Any],
        *,
        key_id: int,
        prepared: PreparedRequest | None = None,
        input_items: Sequence[Mapping[str, Any]] | None = None,
        previous_response_id: str | None = None,
    ) -> None:
        """Store a finished Response object (``id``, ``model``, ``status``, ``output``, ``usage``,
        ...). This turn's inputs come from ``prepared`` or, without it, ``input_items``. Saving the
        same id again (a retried write) replaces the row."""
        response_id = response.get("id")
        if not isinstance(response_id, str) or not response_id:
            raise ValueError("a stored response needs a string id")
        if prepared is not None:
            turn = prepared.turn_items
            previous_response_id = prepared.previous_response_id
        else:
            turn = canonical_input(list(input_items or ()))
        status = response.get("status")
        output = response.get("output")
        usage = response.get("usage")
        now = utcnow()
        row = StoredResponse(
            id=response_id,
            key_id=key_id,
            model=str(response.get("model") or ""),
            status=status if status in RESPONSE_STATUSES else "completed",
            previous_response_id=previous_response_id,
            input_items=[dict(item) for item in turn],
            output_items=[dict(item) for item in output] if isinstance(output, list) else [],
            usage=dict(usage) if isinstance(usage, Mapping) else None,
            response={k: v for k, v in response.items() if k not in _SPLIT_FIELDS},
            created_at=now,
            expires_at=now + self._retention,
        )
        async with self._sessions() as session, session.begin():
            await session.merge(row)

    # --- the GET / DELETE endpoints ------------------------------------------------------------

    async def get(self, response_id: str, key_id: int, *, include: Iterable[str] = ()) -> dict[str, Any]:
        """``GET /v1/responses/{id}``: the Response object as first returned."""
        row = await self._row(response_id, key_id)
        include = tuple(include)
        body = dict(row.response)
        body["output"] = [client_item(item, include) for item in row.output_items]
        body["usage"] = row.usage
        return body

    async def input_items(
        self,
        response_id: str,
        key_id: int,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = DEFAULT_PAGE,
        order: str = "desc",
        include: Iterable[str] = (),
    ) -> dict[str, Any]:
        """``GET /v1/responses/{id}/input_items``: every item the response was generated from (the
        earlier turns' inputs and outputs, then its own inputs), as a ``ResponseItemList`` page."""
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order must be 'asc' or 'desc'", param="order")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}", param="limit")
        row = await self._row(response_id, key_id)
        items: list[dict[str, Any]] = []
        if row.previous_response_id:
            rows = await self._chain(row.previous_response_id, key_id)
            for input_items, output_items in rows:
                items.extend(input_items)
                items.extend(output_items)
        items.extend(row.input_items)
        if order == "desc":
            items.reverse()
        items = _page_window(items, after=after, before=before)
        page = items[:limit]
        include = tuple(include)
        return {
            "object": "list",
            "data": [client_item(item, include) for item in page],
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }

    async def delete(self, response_id: str, key_id: int) -> dict[str, Any]:
        """``DELETE /v1/responses/{id}``."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(StoredResponse).where(
                    StoredResponse.id == response_id,
                    StoredResponse.key_id == key_id,
                    StoredResponse.expires_at > utcnow(),
                )
            )
        if not getattr(result, "rowcount", 0):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete expired rows (reads already ignore them); returns how many went."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(StoredResponse).where(StoredResponse.expires_at <= (now or utcnow()))
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # --- queries -------------------------------------------------------------------------------

    async def _row(self, response_id: str, key_id: int) -> StoredResponse:
        async with self._sessions() as session:
            row = await session.scalar(
                select(StoredResponse).where(
                    StoredResponse.id == response_id,
                    StoredResponse.key_id == key_id,
                    StoredResponse.expires_at > utcnow(),
                )
            )
        if row is None:
            raise _not_found(response_id)
        return row

    async def _chain(self, response_id: str, key_id: int) -> list[tuple[list[Any], list[Any]]]:
        """(input_items, output_items) of ``response_id`` and its stored predecessors, oldest first,
        in one recursive query."""
        table = StoredResponse.__table__
        now = utcnow()
        alive = (table.c.key_id == key_id) & (table.c.expires_at > now)
        chain = (
            select(table.c.id, table.c.previous_response_id, literal(0).label("depth"))
            .where(table.c.id == response_id, alive)
            .cte("chain", recursive=True)
        )
        link = table.alias("link")
        chain = chain.union_all(
            select(link.c.id, link.c.previous_response_id, (chain.c.depth + 1).label("depth"))
            .join(chain, link.c.id == chain.c.previous_response_id)
            .where(link.c.key_id == key_id, link.c.expires_at > now, chain.c.depth < self._max_chain)
        )
        query = (
            select(table.c.input_items, table.c.output_items)
            .join(chain, table.c.id == chain.c.id)
            .order_by(chain.c.depth.desc())
        )
        async with self._sessions() as session:
            result = await session.execute(query)
            return [(list(r.input_items or []), list(r.output_items or [])) for r in result]


def _page_window(
    items: list[dict[str, Any]], *, after: str | None, before: str | None
) -> list[dict[str, Any]]:
    """The items strictly after ``after`` and strictly before ``before`` (cursors are item ids in
    the listing order; an unknown cursor is an error, as the API answers)."""
    ids = [item.get("id") for item in items]
    start, end = 0, len(items)
    if after is not None:
        if after not in ids:
            raise InvalidRequestError(f"no item with id '{after}' in this list", param="after")
        start = ids.index(after) + 1
    if before is not None:
        if before not in ids:
            raise InvalidRequestError(f"no item with id '{before}' in this list", param="before")
        end = ids.index(before)
    return items[start:end]

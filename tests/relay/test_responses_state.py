"""The Responses API state service against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from openai.types.responses import Response, ResponseItemList
from sqlalchemy.ext.asyncio import AsyncEngine

from isthmus.errors import InvalidRequestError, NotFoundError
from isthmus.ir.usage import Usage
from isthmus.protocols.openai_responses import usage_to_wire
from isthmus.relay.responses_state import ResponsesState
from isthmus.store.db import create_engine, session_factory
from isthmus.store.migrations import upgrade_database

KEY = 7
OTHER_KEY = 8


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_database(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def state(engine: AsyncEngine) -> ResponsesState:
    return ResponsesState(session_factory(engine))


def response_object(response_id: str, text: str, *, reasoning: str | None = None) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reasoning is not None:
        output.append(
            {
                "id": f"rs_{response_id}",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "thinking"}],
                "encrypted_content": reasoning,
            }
        )
    output.append(
        {
            "id": f"msg_{response_id}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000,
        "model": "claude-test",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage_to_wire(Usage(input_tokens=10, output_tokens=3)),
    }


async def turn(state: ResponsesState, response_id: str, body: dict[str, Any], answer: str) -> list[Any]:
    """One converted request: prepare, (the upstream answers), save. Returns what went upstream."""
    prepared = await state.prepare(body, KEY)
    if prepared.store:
        await state.save(response_object(response_id, answer), key_id=KEY, prepared=prepared)
    return list(prepared.body["input"])


def texts(items: list[Any]) -> list[str]:
    return [part["text"] for item in items if item.get("type") == "message" for part in item["content"]]


async def test_get_returns_the_saved_response_to_its_key_only(state: ResponsesState) -> None:
    await turn(state, "resp_a", {"model": "m", "input": "hello"}, "hi there")

    body = await state.get("resp_a", KEY)
    parsed = Response.model_validate(body)
    assert parsed.output_text == "hi there"
    assert parsed.usage is not None and parsed.usage.total_tokens == 13

    with pytest.raises(NotFoundError):
        await state.get("resp_a", OTHER_KEY)
    with pytest.raises(NotFoundError):
        await state.get("resp_missing", KEY)
    with pytest.raises(NotFoundError):
        await state.prepare({"input": "again", "previous_response_id": "resp_a"}, OTHER_KEY)


async def test_previous_response_id_replays_the_chain_oldest_first(state: ResponsesState) -> None:
    sent1 = await turn(state, "resp_1", {"input": "one", "instructions": "be brief"}, "answer one")
    sent2 = await turn(state, "resp_2", {"input": "two", "previous_response_id": "resp_1"}, "answer two")
    sent3 = await turn(
        state,
        "resp_3",
        {"input": [{"role": "user", "content": "three"}], "previous_response_id": "resp_2"},
        "answer three",
    )
    assert texts(sent1) == ["one"]
    assert texts(sent2) == ["one", "answer one", "two"]
    assert texts(sent3) == ["one", "answer one", "two", "answer two", "three"]
    assert [item["role"] for item in sent3] == ["user", "assistant", "user", "assistant", "user"]

    prepared = await state.prepare({"input": "four", "previous_response_id": "resp_3"}, KEY)
    assert "previous_response_id" not in prepared.body
    assert texts(prepared.body["input"]) == [*texts(sent3), "answer three", "four"]
    assert texts(prepared.turn_items) == ["four"]


async def test_a_fresh_instance_finds_a_response_saved_just_before(
    state: ResponsesState, database_url: str
) -> None:
    # Another process (its own engine) serves the follow-up the moment the first answer is out.
    await turn(state, "resp_x", {"input": "first"}, "done")
    other_engine = create_engine(database_url)
    try:
        other = ResponsesState(session_factory(other_engine))
        history = await other.load_for_continuation("resp_x", KEY)
    finally:
        await other_engine.dispose()
    assert texts(history) == ["first", "done"]


async def test_store_false_is_not_saved(state: ResponsesState) -> None:
    await turn(state, "resp_nostore", {"input": "secret", "store": False}, "ok")
    with pytest.raises(NotFoundError):
        await state.get("resp_nostore", KEY)


async def test_reasoning_payload_survives_but_is_shown_only_when_included(state: ResponsesState) -> None:
    prepared = await state.prepare({"input": "think"}, KEY)
    await state.save(
        response_object("resp_r", "42", reasoning="sealed-payload"), key_id=KEY, prepared=prepared
    )

    plain = await state.get("resp_r", KEY)
    assert "encrypted_content" not in plain["output"][0]
    shown = await state.get("resp_r", KEY, include=["reasoning.encrypted_content"])
    assert shown["output"][0]["encrypted_content"] == "sealed-payload"

    history = await state.load_for_continuation("resp_r", KEY)
    reasoning = [item for item in history if item["type"] == "reasoning"]
    assert [item["encrypted_content"] for item in reasoning] == ["sealed-payload"]


async def test_input_items_lists_history_and_own_input_in_pages(state: ResponsesState) -> None:
    await turn(state, "resp_p1", {"input": "a"}, "b")
    await turn(state, "resp_p2", {"input": "c", "previous_response_id": "resp_p1"}, "d")

    page = await state.input_items("resp_p2", KEY, order="asc")
    listed = ResponseItemList.model_validate(page)
    assert [item.type for item in listed.data] == ["message", "message", "message"]
    assert texts(page["data"]) == ["a", "b", "c"]  # its own output is not an input
    assert page["has_more"] is False

    newest_first = await state.input_items("resp_p2", KEY, limit=2)
    assert texts(newest_first["data"]) == ["c", "b"]
    assert newest_first["has_more"] is True
    rest = await state.input_items("resp_p2", KEY, limit=2, after=newest_first["last_id"])
    assert texts(rest["data"]) == ["a"]
    assert rest["has_more"] is False

    with pytest.raises(InvalidRequestError):
        await state.input_items("resp_p2", KEY, limit=0)
    with pytest.raises(NotFoundError):
        await state.input_items("resp_p2", OTHER_KEY)


async def test_item_reference_resolves_against_the_conversation(state: ResponsesState) -> None:
    await turn(state, "resp_ref", {"input": "original question"}, "reply")
    history = await state.load_for_continuation("resp_ref", KEY)
    question_id = history[0]["id"]

    prepared = await state.prepare(
        {"previous_response_id": "resp_ref", "input": [{"type": "item_reference", "id": question_id}]}, KEY
    )
    assert texts(prepared.turn_items) == ["original question"]

    with pytest.raises(InvalidRequestError):
        await state.prepare(
            {"previous_response_id": "resp_ref", "input": [{"type": "item_reference", "id": "msg_nope"}]}, KEY
        )


async def test_delete_is_per_key_and_cuts_the_chain_there(state: ResponsesState) -> None:
    await turn(state, "resp_d1", {"input": "x"}, "y")
    await turn(state, "resp_d2", {"input": "z", "previous_response_id": "resp_d1"}, "w")

    with pytest.raises(NotFoundError):
        await state.delete("resp_d1", OTHER_KEY)
    assert await state.delete("resp_d1", KEY) == {"id": "resp_d1", "object": "response", "deleted": True}
    with pytest.raises(NotFoundError):
        await state.get("resp_d1", KEY)
    with pytest.raises(NotFoundError):
        await state.delete("resp_d1", KEY)
    # The later turn still continues, from the oldest link left.
    assert texts(await state.load_for_continuation("resp_d2", KEY)) == ["z", "w"]


async def test_expired_responses_are_invisible_then_purged(engine: AsyncEngine) -> None:
    expired = ResponsesState(session_factory(engine), retention=timedelta(seconds=-1))
    await turn(expired, "resp_old", {"input": "stale"}, "gone")
    with pytest.raises(NotFoundError):
        await expired.get("resp_old", KEY)
    with pytest.raises(NotFoundError):
        await expired.load_for_continuation("resp_old", KEY)
    assert await expired.purge_expired() == 1
    assert await expired.purge_expired() == 0


async def test_saving_the_same_id_again_replaces_it(state: ResponsesState) -> None:
    prepared = await state.prepare({"input": "q"}, KEY)
    await state.save(response_object("resp_same", "first try"), key_id=KEY, prepared=prepared)
    await state.save(response_object("resp_same", "second try"), key_id=KEY, prepared=prepared)
    assert Response.model_validate(await state.get("resp_same", KEY)).output_text == "second try"

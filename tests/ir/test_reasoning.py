"""Reasoning rules: effort ↔ budget tables and the envelope that carries foreign reasoning home."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isthmus.ir import EncryptedReasoningPart, Protocol, RedactedThinkingPart, ThinkingPart
from isthmus.ir.reasoning import (
    EFFORT_BUDGET,
    budget_for_effort,
    effort_for_budget,
    family,
    is_sealed,
    seal,
    unseal,
)

ALL_EFFORTS = tuple(EFFORT_BUDGET)
origins = st.sampled_from(list(Protocol))
blobs = st.none() | st.text(max_size=30)
reasoning_parts = st.one_of(
    st.builds(ThinkingPart, text=st.just(""), signature=blobs, origin=origins),
    st.builds(RedactedThinkingPart, data=st.text(max_size=30), origin=origins),
    st.builds(
        EncryptedReasoningPart,
        id=blobs,
        encrypted_content=blobs,
        summary=st.lists(st.text(max_size=20), max_size=3),
        content=st.lists(st.text(max_size=20), max_size=3),
        origin=origins,
    ),
)


@given(reasoning_parts, st.sampled_from([None, "next", "previous"]))
def test_sealed_parts_open_to_what_was_sealed(part: object, attach: str | None) -> None:
    assert isinstance(part, ThinkingPart | RedactedThinkingPart | EncryptedReasoningPart)
    sealed = seal(part, attach=attach)
    base64.b64decode(sealed, validate=True)  # Gemini carries signatures as bytes: must be base64
    assert is_sealed(sealed)
    opened = unseal(sealed)
    assert opened is not None and opened.part == part and opened.attach == attach


def test_thinking_text_travels_beside_the_envelope() -> None:
    sealed = seal(ThinkingPart(text="long thoughts", signature="sig", origin=Protocol.GEMINI))
    assert "long thoughts" not in base64.b64decode(sealed).decode()
    opened = unseal(sealed, text="long thoughts")
    assert opened is not None
    assert opened.part == ThinkingPart(text="long thoughts", signature="sig", origin=Protocol.GEMINI)


@pytest.mark.parametrize(
    "value",
    [
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",  # a real-looking Claude signature
        "",
        "SVNUSE1V",  # the magic's first bytes, nothing more
        "SVNUSE1VUwF7Im8iOiJub3QtYS1wcm90b2NvbCJ9",  # magic + JSON naming an unknown protocol
        "SVNUSE1VUwF7fQ==",  # magic + an empty object
        "SVNUSE1V!!!!",  # not base64
    ],
)
def test_genuine_or_broken_values_are_not_envelopes(value: str) -> None:
    assert unseal(value) is None


@pytest.mark.parametrize("effort", ALL_EFFORTS)
def test_effort_budget_tables_agree(effort: str) -> None:
    assert effort_for_budget(budget_for_effort(effort), allowed=ALL_EFFORTS) == effort


def test_budget_maps_to_nearest_effort_the_target_knows() -> None:
    assert effort_for_budget(500) == "low"  # "minimal" is not allowed by default: the lowest known
    assert effort_for_budget(100_000) == "high"
    assert effort_for_budget(100_000, allowed=("low", "medium", "high", "xhigh")) == "xhigh"
    assert budget_for_effort("unheard-of") == EFFORT_BUDGET["medium"]
    assert budget_for_effort("minimal") >= 1024  # Anthropic's smallest budget


def test_chat_and_responses_share_a_family() -> None:
    assert family(Protocol.OPENAI_CHAT) == family(Protocol.OPENAI_RESPONSES)
    assert len({family(p) for p in Protocol}) == 3

"""Building blocks shared by every admin schema: names, UTC timestamps, pages."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def _check_name(value: str) -> str:
    # Names are shown in lists, logs and the CLI: no invisible or control characters, no padding. Any
    # other text (quotes, spaces, SQL-looking strings) is stored as is.
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise ValueError("must not contain control or invisible characters")
    return value


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_check_name)]
UpstreamModelName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_check_name)]
# A timestamp without a zone is taken as UTC.
UTCTime = Annotated[datetime, AfterValidator(_as_utc)]


class Body(BaseModel):
    """A request body: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """A response body built from attributes of a row."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class Message(BaseModel):
    ok: bool = True
    message: str

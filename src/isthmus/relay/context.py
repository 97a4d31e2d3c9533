"""What the relay learns about one request: who, what, every attempt, usage and outcome.

The accounting layer turns a finished context into a usage record, a trace and a request log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import StrEnum

from isthmus.accounting import Admission, Subject
from isthmus.ir import Operation, Protocol, Usage


class Outcome(StrEnum):
    OK = "ok"  # completed normally
    INCOMPLETE = "incomplete"  # completed, but cut short by max tokens or a content filter
    CLIENT_ERROR = "client_error"  # refused before or by the upstream as the caller's fault (4xx)
    UPSTREAM_ERROR = "upstream_error"  # every candidate failed
    CUT = "cut"  # the upstream broke the stream after it was committed
    DISCONNECTED = "disconnected"  # the client went away
    REFUSED = "refused"  # a rate limit or budget refused it before any upstream was called
    INTERNAL_ERROR = "internal_error"  # the gateway itself failed (a bug): logged with its traceback


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a gateway key, as the request path needs it (built from the snapshot)."""

    key_id: int
    key_name: str
    user_id: int | None
    team_id: int | None
    allowed_models: frozenset[str] | None
    log_detail: str | None
    expires_at: float | None  # unix seconds
    active: bool
    route_hash: int  # stable spread of this key across equal upstream candidates
    subject: Subject | None = None  # limits and budgets of the key, its user and team


@dataclass(slots=True)
class Attempt:
    candidate: str  # "provider/key:upstream-model"
    provider_id: int
    provider_name: str
    key_id: int
    key_name: str
    upstream_model: str
    protocol: Protocol
    started: float
    cost_multiplier: float = 1.0
    free_tier: bool = False
    latency_ms: float = 0.0
    status: int | None = None  # upstream HTTP status, when one arrived
    error: str | None = None
    skipped: str | None = None  # why the candidate was not tried


def new_request_id() -> str:
    # Time-ordered (ms prefix) so ids sort by arrival, random tail for uniqueness across instances.
    return f"req_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    protocol_in: Protocol
    operation: Operation
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    principal: Principal | None = None
    model: str | None = None  # public model the client asked for
    stream: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    outcome: Outcome = Outcome.OK
    status: int = 200  # HTTP status the client got
    error: str | None = None
    finish_reason: str | None = None
    upstream_ms: float = 0.0  # time spent waiting on upstreams
    ttft_ms: float | None = None  # time to the first byte sent to the client
    request_bytes: int = 0
    estimated: bool = False  # usage counted locally rather than reported by the upstream
    client_gone: bool = False
    finished: bool = False  # the response is complete; a disconnect from now on is not a cut
    committed: bool = False  # the answer (or its first bytes) reached the client
    events_relayed: int = 0  # content events of the committed stream sent on (an output estimate)
    secret: str | None = field(default=None, repr=False)  # the presented key, to redact it from logs
    admission: Admission | None = None
    log_capture: object | None = None  # a billing.LogCapture above the base log level

    @property
    def final_attempt(self) -> Attempt | None:
        for attempt in reversed(self.attempts):
            if attempt.skipped is None and attempt.error is None:
                return attempt
        return None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

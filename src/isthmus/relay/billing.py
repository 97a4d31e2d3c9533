"""Accounting at the edges of a request: admission before routing, and after the answer the cost,
the budget settlement and the usage record (trace and request log included) handed to the writer.

Nothing here waits on the database: admission is in memory or one Redis round trip, and the record
goes to the writer's queue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from isthmus.accounting import Accountant
from isthmus.accounting.limits import HasLimits, Lease
from isthmus.accounting.records import AttemptRecord, LogLevel, RecordBundle, UsageRecord
from isthmus.accounting.request_logs import BodyCapture, build_request_log, redact_errors
from isthmus.accounting.writer import UsageWriter
from isthmus.errors import RateLimitedError
from isthmus.ir import Operation, Protocol, Usage
from isthmus.metrics import Metrics
from isthmus.relay.asgi import Message, Send
from isthmus.relay.context import Outcome, RequestContext
from isthmus.relay.state import GatewayState

log = logging.getLogger("isthmus.billing")

# Where each protocol puts the answer's length cap, for the reservation's estimate.
_MAX_TOKENS_FIELDS: dict[Protocol, tuple[str, ...]] = {
    Protocol.OPENAI_CHAT: ("max_completion_tokens", "max_tokens"),
    Protocol.OPENAI_RESPONSES: ("max_output_tokens",),
    Protocol.ANTHROPIC: ("max_tokens",),
}


def max_output_tokens(protocol: Protocol, body: Mapping[str, Any]) -> int | None:
    if protocol is Protocol.GEMINI:
        config = body.get("generationConfig") or body.get("generation_config")
        value = config.get("maxOutputTokens") if isinstance(config, Mapping) else None
    else:
        value = next((body[f] for f in _MAX_TOKENS_FIELDS[protocol] if body.get(f) is not None), None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class LogCapture:
    """Headers and bodies of one request for the ``headers``/``full`` request-log levels. Installed
    only at those levels, so a ``base`` request pays nothing for it."""

    __slots__ = ("level", "request_body", "request_headers", "response_body", "response_headers")

    def __init__(self, level: LogLevel, headers: Mapping[str, str], body: bytes, longest_secret: int) -> None:
        self.level = level
        self.request_headers = dict(headers)
        self.request_body = body if level is LogLevel.FULL else None
        self.response_headers: dict[str, str] | None = None
        self.response_body = BodyCapture(longest_secret=longest_secret) if level is LogLevel.FULL else None

    def wrap(self, send: Send) -> Send:
        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.response_headers = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif self.response_body is not None:
                self.response_body.feed(message.get("body", b""))
            await send(message)

        return capturing_send


class Billing:
    def __init__(self, accountant: Accountant, writer: UsageWriter | None, metrics: Metrics) -> None:
        self.accountant = accountant
        self.writer = writer
        self.metrics = metrics

    async def admit(self, ctx: RequestContext, protocol: Protocol, body: Mapping[str, Any]) -> None:
        writer = self.writer
        if writer is not None and writer.congested:
            await writer.room()  # the usage writer is behind: take no more work until it catches up
        principal = ctx.principal
        if principal is None or principal.subject is None or ctx.operation is not Operation.GENERATE:
            return
        try:
            ctx.admission = await self.accountant.admit(
                principal.subject, ctx.model or "", ctx.request_bytes, max_output_tokens(protocol, body)
            )
        except RateLimitedError:
            ctx.outcome = Outcome.REFUSED
            raise
        except self.accountant.unavailable as exc:
            # The shared state is unreachable: serve the request (fail open) rather than turn a Redis
            # outage into a gateway outage; the usage record still counts it.
            log.warning("admission skipped for %s: shared state unavailable (%s)", ctx.request_id, exc)

    async def provider_key_slot(
        self, ctx: RequestContext, key_id: int, limits: HasLimits
    ) -> tuple[bool, Lease | None]:
        """Whether a candidate's provider key may be used now, and the lease to give back after it.
        Fails open, like admission, when the shared state is unreachable."""
        try:
            lease = await self.accountant.try_acquire_provider_key(key_id, limits)
        except self.accountant.unavailable as exc:
            log.warning(
                "provider key limits skipped for %s: shared state unavailable (%s)", ctx.request_id, exc
            )
            return True, None
        return lease is not None, lease

    async def release_provider_key(self, ctx: RequestContext, lease: Lease, tokens: int) -> None:
        try:
            await self.accountant.release_provider_key(lease, tokens)
        except self.accountant.unavailable as exc:  # the lease expires on its own
            log.warning("provider key lease not released for %s: %s", ctx.request_id, exc)

    async def finish(self, ctx: RequestContext, state: GatewayState) -> None:
        """Settle the budget and queue the usage record. Never raises: the answer is already out."""
        try:
            await self._finish(ctx, state)
        except Exception:
            log.exception("accounting failed for request %s", ctx.request_id)

    async def _finish(self, ctx: RequestContext, state: GatewayState) -> None:
        usage = _billable_usage(ctx)
        started = datetime.fromtimestamp(ctx.started_wall, UTC)
        served = ctx.final_attempt if ctx.committed else None
        cost, price = self.accountant.cost(
            ctx.model or "",
            served.upstream_model if served else None,
            usage,
            started,
            served.cost_multiplier if served else 1.0,
            served.free_tier if served else False,
        )
        if ctx.admission is not None:
            try:
                await self.accountant.settle(ctx.admission, usage, cost)
            except self.accountant.unavailable as exc:  # the record below must still be written
                log.warning("budget settlement failed for %s: %s", ctx.request_id, exc)
        latency = ctx.elapsed_ms()
        self.metrics.observe_request(ctx.protocol_in.value, ctx.model or "", ctx.status, latency)
        if self.writer is None or ctx.principal is None:
            return
        principal = ctx.principal
        record = UsageRecord(
            request_id=ctx.request_id,
            started_at=started,
            status=ctx.outcome.value,
            http_status=ctx.status,
            protocol_in=ctx.protocol_in.value,
            key_id=principal.key_id,
            key_name=principal.key_name,
            user_id=principal.user_id,
            team_id=principal.team_id,
            model_requested=ctx.model,
            upstream_model=served.upstream_model if served else None,
            provider_id=served.provider_id if served else None,
            provider_name=served.provider_name if served else None,
            provider_key_id=served.key_id if served else None,
            provider_key_name=served.key_name if served else None,
            protocol_out=served.protocol.value if served else None,
            stream=ctx.stream,
            error=ctx.error,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            list_cost=cost.list_usd,
            actual_cost=cost.actual_usd,
            prices=price.to_json() if price is not None else None,
            latency_ms=round(latency),
            ttft_ms=round(ctx.ttft_ms) if ctx.ttft_ms is not None else None,
            attempts=sum(1 for a in ctx.attempts if a.skipped is None),
            estimated=ctx.estimated,
        )
        attempts = [
            AttemptRecord(
                request_id=ctx.request_id,
                attempt_no=number,
                candidate=a.candidate,
                provider_id=a.provider_id,
                provider_key_id=a.key_id,
                upstream_model=a.upstream_model,
                protocol=a.protocol.value,
                status="skipped" if a.skipped else ("failed" if a.error else "ok"),
                http_status=a.status,
                latency_ms=round(a.latency_ms),
                error=a.error,
                skipped=a.skipped,
            )
            for number, a in enumerate(ctx.attempts, start=1)
        ]
        bundle = RecordBundle(usage=record, attempts=attempts)
        extra = (ctx.secret,) if ctx.secret else ()
        capture = ctx.log_capture
        if isinstance(capture, LogCapture):
            bundle.log = build_request_log(
                ctx.request_id,
                capture.level,
                state.redactor,
                extra_secrets=extra,
                request_headers=capture.request_headers,
                response_headers=capture.response_headers,
                request_body=capture.request_body,
                response_body=capture.response_body,
                created_at=started,
            )
        redact_errors(bundle, state.redactor, extra)
        if not self.writer.submit(bundle):
            self.metrics.dropped_records += 1


def _billable_usage(ctx: RequestContext) -> Usage:
    """What the upstream reported or, for a stream cut or abandoned before its usage arrived, an
    estimate of what was produced (one token per content event relayed, the prompt from the body
    size).

    An unfinished stream's output count is at best what the upstream reported when it began
    (Anthropic's ``message_start`` says ``output_tokens: 1``; Gemini's chunks carry the prompt only),
    so the content relayed to the client stands in for it whenever it is larger.
    """
    usage = ctx.usage
    if ctx.committed and ctx.outcome in (Outcome.CUT, Outcome.DISCONNECTED):
        if usage.output_tokens < ctx.events_relayed:
            usage.output_tokens = ctx.events_relayed
            ctx.estimated = True
        if usage.prompt_tokens == 0:
            usage.input_tokens = ctx.request_bytes // 4
            ctx.estimated = True
    return usage

"""The request pipeline: authenticate → admit → route → attempt loop → relay → record.

Same-protocol calls pass through: the body goes upstream with only ``model`` rewritten and the
answer comes back byte for byte, while usage is tapped on the way. A streamed answer is committed
to the client only after its first content event (read-ahead), so empty streams, errors inside a
200 stream and first-byte timeouts still fail over; after that there is no retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from isthmus.accounting.records import LogLevel
from isthmus.accounting.request_logs import effective_level
from isthmus.errors import (
    AuthenticationError,
    InvalidRequestError,
    IsthmusError,
    NoCandidateError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from isthmus.ir import Operation, Protocol
from isthmus.protocols import convert, tokens
from isthmus.protocols.base import EventClass, parse_json_object
from isthmus.protocols.sse import SSEParser, split_region
from isthmus.providers.base import Provider, UpstreamCall, UpstreamResponse, UpstreamTarget
from isthmus.providers.errors import http_error, redact_secret
from isthmus.relay import wire
from isthmus.relay.adapt import Adapter, StreamAdapter, renamer
from isthmus.relay.asgi import (
    WATCH_DISCONNECT_AFTER_S,
    ClientGone,
    DisconnectWatch,
    Message,
    RawHeaders,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    send_bytes,
)
from isthmus.relay.billing import Billing, LogCapture
from isthmus.relay.context import Attempt, Outcome, Principal, RequestContext, new_request_id
from isthmus.relay.doors import Door, list_models_shape
from isthmus.relay.responses_owners import ResponseOwners
from isthmus.relay.responses_state import PreparedRequest, ResponsesState
from isthmus.relay.state import StateHolder
from isthmus.routing.failover import classify
from isthmus.routing.model import Candidate, Requirements, passthrough_only
from isthmus.routing.router import RoutePlan

# Client headers forwarded upstream: protocol version and feature flags, never credentials.
_FORWARD_HEADERS = frozenset({"anthropic-version", "anthropic-beta", "openai-beta"})
_CACHE_1H = re.compile(rb'"ttl"\s*:\s*"1h"')
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_INCOMPLETE_REASONS = frozenset(
    {"length", "max_tokens", "MAX_TOKENS", "content_filter", "SAFETY", "incomplete", "max_output_tokens"}
)


def extract_api_key(headers: Mapping[str, str], query: str) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("x-api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    if query:
        for part in query.split("&"):
            if part.startswith("key="):
                return part[4:] or None
    return None


log = logging.getLogger("isthmus.relay")

Keeper = Callable[[dict[str, Any] | None], Awaitable[None]]


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # x-mock-* knobs only mean something to the mock provider; real upstreams ignore them.
    return {k: v for k, v in headers.items() if k in _FORWARD_HEADERS or k.startswith("x-mock-")}


def _forward_query(query: str) -> str:
    """The client's query flags minus credentials (``?beta=true`` survives, ``?key=`` does not)."""
    if not query:
        return ""
    return "&".join(p for p in query.split("&") if p and not p.startswith("key="))


class Relay:
    def __init__(
        self,
        holder: StateHolder,
        providers: Mapping[str, Provider],
        billing: Billing,
        *,
        max_body_bytes: int,
        responses: ResponsesState | None = None,
    ) -> None:
        self._holder = holder
        self._providers = providers
        self._billing = billing
        self._max_body = max_body_bytes
        self.owners = ResponseOwners()
        self._responses = responses

    # --- entry points ----------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, door: Door) -> None:
        headers = header_map(scope)
        ctx = RequestContext(
            request_id=self._request_id(headers), protocol_in=door.protocol, operation=door.operation
        )
        query = scope.get("query_string", b"").decode("latin-1")
        watcher: DisconnectWatch | None = None
        state = self._holder.current
        try:
            ctx.principal = self._authenticate(headers, query, ctx)
            raw = await read_body(receive, self._max_body)
            ctx.request_bytes = len(raw)
            level = effective_level(state.log_detail, ctx.principal.log_detail)
            if level is not LogLevel.BASE:
                capture = LogCapture(level, headers, raw, state.redactor.longest_secret)
                ctx.log_capture = capture
                send = capture.wrap(send)
            watcher = self._watch_disconnect(receive, ctx)
            send = _marking_finished(send, ctx)
            if door.operation in (Operation.RESPONSE_GET, Operation.RESPONSE_DELETE):
                await self._resource(ctx, door, headers, query, send)
            else:
                await self._generate(ctx, door, raw, headers, query, send)
        except ClientGone:
            ctx.outcome, ctx.status = Outcome.DISCONNECTED, 499
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not ctx.client_gone or task is None:
                raise
            task.uncancel()
            ctx.outcome = Outcome.DISCONNECTED
            if not ctx.committed:
                ctx.status = 499  # the client left before any answer: record no status it never got
        except IsthmusError as err:
            await self._send_error(ctx, send, err)
        except Exception:
            # A bug of ours: the caller still gets an error in its own protocol, and the record says so.
            log.exception("request %s failed inside the gateway", ctx.request_id)
            await self._send_internal_error(ctx, send)
        finally:
            ctx.finished = True
            if watcher is not None:
                watcher.stop()
            await self._billing.finish(ctx, state)

    async def list_models(self, scope: Scope, send: Send, path: str, hint: Protocol | None) -> None:
        headers = header_map(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        shape = list_models_shape(path, headers, query, hint)
        ctx = RequestContext(
            request_id=self._request_id(headers), protocol_in=shape, operation=Operation.LIST_MODELS
        )
        try:
            principal = self._authenticate(headers, query)
            body = wire.encode_model_list(shape, self._holder.current.visible_models(principal))
            await send_bytes(send, 200, body, self._base_headers(ctx))
        except IsthmusError as err:
            await self._send_error(ctx, send, err)
        except Exception:
            log.exception("listing models failed inside the gateway (request %s)", ctx.request_id)
            await self._send_internal_error(ctx, send)

    # --- steps -----------------------------------------------------------------------------

    def _request_id(self, headers: Mapping[str, str]) -> str:
        rid = headers.get("x-request-id")
        if rid and _REQUEST_ID.match(rid):
            return rid
        return new_request_id()

    def _authenticate(
        self, headers: Mapping[str, str], query: str, ctx: RequestContext | None = None
    ) -> Principal:
        secret = extract_api_key(headers, query)
        if not secret:
            raise AuthenticationError(
                "no API key: send it as a Bearer token, x-api-key, x-goog-api-key or ?key="
            )
        digest = hashlib.sha256(secret.encode()).hexdigest()
        principal = self._holder.current.principals.get(digest)
        if ctx is not None:
            ctx.secret = secret
        if principal is None:
            raise AuthenticationError("invalid API key")
        if not principal.active:
            raise AuthenticationError("this API key is paused or revoked")
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthenticationError("this API key has expired")
        return principal

    def _watch_disconnect(self, receive: Receive, ctx: RequestContext) -> DisconnectWatch:
        task = asyncio.current_task()

        def gone() -> None:
            if not ctx.finished and task is not None:
                ctx.client_gone = True
                task.cancel()

        return DisconnectWatch(receive, gone, WATCH_DISCONNECT_AFTER_S)

    async def _generate(
        self, ctx: RequestContext, door: Door, raw: bytes, headers: Mapping[str, str], query: str, send: Send
    ) -> None:
        body = parse_json_object(raw)
        model = door.model or body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("the request names no model", param="model")
        ctx.model = model
        ctx.stream = door.stream if door.stream is not None else body.get("stream") is True
        state = self._holder.current
        principal = ctx.principal
        assert principal is not None
        if principal.allowed_models is not None and model not in principal.allowed_models:
            raise PermissionDeniedError(f"this API key may not use model {model!r}")
        if model not in state.models:
            raise NotFoundError(f"model {model!r} does not exist", param="model", code="model_not_found")
        prepared = None
        if door.protocol is Protocol.OPENAI_RESPONSES and door.operation is Operation.GENERATE:
            body, prepared = await self._prepare_responses(ctx, body)
        await self._billing.admit(ctx, door.protocol, body)
        requirements = Requirements(
            client_protocol=door.protocol,
            needs_context_1m="context-1m" in headers.get("anthropic-beta", ""),
            needs_cache_1h=_CACHE_1H.search(raw) is not None,
            can_convert=passthrough_only if door.operation is Operation.EMBED else convert.can_convert,
        )
        plan = state.router.plan(model, requirements, principal.route_hash, time.monotonic())
        for skipped in plan.skipped:
            ctx.attempts.append(_attempt(skipped.candidate, skipped=skipped.reason))
        if not plan.candidates:
            reasons = sorted({s.reason for s in plan.skipped}) or ["no routes"]
            raise NoCandidateError(f"no upstream is available for model {model!r} ({', '.join(reasons)})")
        await self._attempt_loop(
            ctx, door, body, raw, headers, query, plan, send, state.max_attempts, prepared
        )

    async def _prepare_responses(
        self, ctx: RequestContext, body: dict[str, Any]
    ) -> tuple[dict[str, Any], PreparedRequest | None]:
        """Make a Responses request self-contained (``previous_response_id`` and item references
        expanded from the gateway's store) unless a native Responses upstream holds the history."""
        assert ctx.principal is not None
        previous = body.get("previous_response_id")
        if self._responses is None or (
            isinstance(previous, str) and self.owners.lookup(previous, ctx.principal.key_id) is not None
        ):
            return body, None
        prepared = await self._responses.prepare(body, ctx.principal.key_id)
        return prepared.body, prepared

    async def _attempt_loop(
        self,
        ctx: RequestContext,
        door: Door,
        body: dict[str, Any],
        raw: bytes,
        headers: Mapping[str, str],
        query: str,
        plan: RoutePlan,
        send: Send,
        max_attempts: int,
        prepared: PreparedRequest | None = None,
    ) -> None:
        router = self._holder.current.router
        if prepared is not None and (prepared.previous_response_id or b'"item_reference"' in raw):
            raw = orjson.dumps(body)  # the expanded conversation goes upstream, not the short form
        forward = _forward_headers(headers)
        fwd_query = _forward_query(query)
        last: UpstreamError | None = None
        made = 0
        refusal: InvalidRequestError | None = None
        for cand in plan.candidates:
            if made >= max_attempts:
                ctx.attempts.append(_attempt(cand, skipped="max_attempts"))
                continue
            adapter = Adapter(door.protocol, cand.protocol, door.operation, ctx.model or "")
            if door.operation is Operation.COUNT_TOKENS and adapter.converting:
                # The upstream's protocol cannot count for this caller: count here, offline.
                count = tokens.count_tokens_request(door.protocol, body)
                ctx.estimated = True
                answer = orjson.dumps(tokens.count_tokens_answer(door.protocol, count))
                await send_bytes(send, 200, answer, self._base_headers(ctx))
                return
            try:
                upstream_body = adapter.request_body(body, raw, cand.upstream_model, ctx.stream)
            except InvalidRequestError as err:
                # This upstream cannot express the request; another candidate may.
                ctx.attempts.append(_attempt(cand, skipped=f"conversion: {err.message}"))
                refusal = err
                continue
            if not router.claim(plan, cand, time.monotonic()):
                ctx.attempts.append(_attempt(cand, skipped="unavailable (probe in progress or cooling down)"))
                continue
            lease = None
            key = cand.key
            if key.rpm is not None or key.tpm is not None or key.concurrency is not None:
                allowed, lease = await self._billing.provider_key_slot(ctx, key.id, key)
                if not allowed:
                    router.release(cand)
                    ctx.attempts.append(_attempt(cand, skipped="limit:provider_key"))
                    continue
            made += 1
            attempt = _attempt(cand)
            ctx.attempts.append(attempt)
            call = UpstreamCall(
                target=_target(cand),
                operation=door.operation,
                body=upstream_body,
                stream=ctx.stream,
                headers=forward,
                # Query flags belong to the client's protocol (?beta=true, ?alt=sse): a converted call
                # must not carry them to an API that rejects unknown parameters.
                query=fwd_query if not adapter.converting else "",
                action=door.action,
            )
            keep = self._keeper(ctx, adapter, prepared)
            try:
                if ctx.stream:
                    await self._stream_once(ctx, cand, call, attempt, send, adapter.stream(body), keep)
                else:
                    await self._unary_once(ctx, cand, call, attempt, send, adapter, keep)
                    self._succeeded(ctx, cand, attempt)
                return
            except UpstreamError as err:
                attempt.latency_ms = (time.perf_counter() - attempt.started) * 1000
                attempt.error = err.message
                attempt.status = err.upstream_status
                decision = classify(err)
                router.record_failure(cand, decision, time.monotonic(), err.message)
                if not decision.fails_over:
                    await self._send_upstream_error(ctx, send, err, not adapter.converting)
                    return
                last = err
            except BaseException:
                # Cancelled (client gone) or a bug: the candidate's outcome is unknown. The trace
                # must not show an abandoned attempt as served (once committed, it was served).
                if not ctx.committed:
                    attempt.latency_ms = (time.perf_counter() - attempt.started) * 1000
                    attempt.error = "client disconnected" if ctx.client_gone else "attempt aborted"
                router.release(cand)
                raise
            finally:
                if lease is not None:
                    await self._billing.release_provider_key(ctx, lease, ctx.usage.total_tokens)
        if last is None and refusal is not None:
            raise refusal
        if last is None:
            raise NoCandidateError(f"no upstream is available for model {ctx.model!r}")
        raise _final_error(last)

    def _succeeded(self, ctx: RequestContext, cand: Candidate, attempt: Attempt) -> None:
        attempt.latency_ms = (time.perf_counter() - attempt.started) * 1000
        principal = ctx.principal
        self._holder.current.router.record_success(
            cand,
            principal.route_hash if principal else 0,
            ctx.model or "",
            time.monotonic(),
            attempt.latency_ms,
        )

    async def _open(self, cand: Candidate, call: UpstreamCall, ctx: RequestContext) -> UpstreamResponse:
        provider = self._providers[cand.endpoint.provider_type]
        resp = await provider.send(call)
        if resp.status >= 400:
            try:
                data = await resp.read()
            finally:
                await resp.aclose()
            raise http_error(resp.status, data, resp.headers, cand.endpoint.provider_name, cand.key.secret)
        return resp

    async def _unary_once(
        self,
        ctx: RequestContext,
        cand: Candidate,
        call: UpstreamCall,
        attempt: Attempt,
        send: Send,
        adapter: Adapter,
        keep: Keeper | None,
    ) -> None:
        started = time.perf_counter()
        resp = await self._open(cand, call, ctx)
        try:
            data = await resp.read()
        finally:
            await resp.aclose()
        ctx.upstream_ms += (time.perf_counter() - started) * 1000
        attempt.status = resp.status
        parsed = _loads_or_none(data)
        if not isinstance(parsed, dict):
            parsed = None
            if adapter.converting:
                raise UpstreamError(
                    f"upstream {cand.endpoint.provider_name} answered with a body that is not JSON"
                )
        else:
            ctx.usage = wire.usage_from_response(cand.protocol, call.operation, parsed)
            ctx.finish_reason = wire.finish_reason(cand.protocol, parsed)
            if ctx.finish_reason in _INCOMPLETE_REASONS:
                ctx.outcome = Outcome.INCOMPLETE
            if cand.protocol is Protocol.OPENAI_RESPONSES and ctx.principal is not None:
                rid = parsed.get("id")
                if isinstance(rid, str):
                    self.owners.remember(rid, ctx.principal.key_id, call.target)
        body, content_type = data, _content_type(resp)
        if parsed is not None and not adapter.converting:
            body = renamer(parsed.get("model"), ctx.model or "")(data)
        if adapter.converting and parsed is not None:
            converted = adapter.response_object(parsed)
            if keep is not None:
                await keep(converted)  # stored before the client can ask for it
            body, content_type = orjson.dumps(converted), b"application/json"
        headers = self._base_headers(ctx)
        ctx.ttft_ms = ctx.elapsed_ms()
        ctx.committed = True
        await send_bytes(send, resp.status, body, headers, content_type)

    def _keeper(
        self, ctx: RequestContext, adapter: Adapter, prepared: PreparedRequest | None
    ) -> Keeper | None:
        """Stores a converted Responses answer, so ``previous_response_id`` and GET work for it."""
        state = self._responses
        if state is None or prepared is None or not prepared.store or not adapter.converting:
            return None
        key_id = ctx.principal.key_id if ctx.principal else 0

        async def keep(response: dict[str, Any] | None) -> None:
            if response is None or not response.get("id"):
                return
            try:
                await state.save(response, key_id=key_id, prepared=prepared)
            except Exception as exc:
                # The answer itself is fine; only a later previous_response_id to it will not resolve.
                log.warning("could not store response %s for later turns: %s", response.get("id"), exc)

        return keep

    async def _stream_once(
        self,
        ctx: RequestContext,
        cand: Candidate,
        call: UpstreamCall,
        attempt: Attempt,
        send: Send,
        stream: StreamAdapter,
        keep: Keeper | None = None,
    ) -> None:
        timeouts = cand.endpoint.timeouts
        parser = SSEParser()
        pending: list[bytes] = []
        started = time.perf_counter()
        resp: UpstreamResponse | None = None
        try:
            # Read ahead to the first content event: until then a failure can still fail over.
            async with asyncio.timeout(timeouts.first_byte):
                resp = await self._open(cand, call, ctx)
                attempt.status = resp.status
                chunks = resp.iter_chunks().__aiter__()
                committed = False
                produced = 0  # content events read ahead: part of the answer once committed
                while not committed:
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        raise UpstreamStreamError("upstream stream ended before any content") from None
                    region = parser.feed_region(chunk)
                    consumed = 0
                    for event in split_region(region):
                        consumed += len(event.raw)
                        out, kind = stream.take(event)
                        if kind is EventClass.ERROR:
                            raise stream.error or UpstreamStreamError("error event in upstream stream")
                        if kind is EventClass.DONE:
                            # A stream that finishes without a single content event is empty.
                            raise UpstreamStreamError("upstream stream finished with no content")
                        self._note_response_id(ctx, cand, call, event.event, event.data)
                        if out:
                            pending.append(out)
                        if kind is EventClass.CONTENT:
                            committed = True
                            produced += 1
                            break
                    if committed and consumed < len(region):
                        # The rest of the chunk that brought the first content, in one piece. An
                        # error in it can still fail over: the client has not been answered yet.
                        out, more = stream.take_region(region[consumed:])
                        if stream.error is not None:
                            raise stream.error
                        pending.append(out)
                        produced += more
        except TimeoutError:
            if resp is not None:
                await resp.aclose()
            raise UpstreamTimeoutError(
                f"upstream {cand.endpoint.provider_name} sent no content within {timeouts.first_byte:g}s",
                phase="first_byte",
            ) from None
        except BaseException:
            if resp is not None:
                await resp.aclose()
            raise
        ctx.upstream_ms += (time.perf_counter() - started) * 1000
        # Committed: from here on failures become an error event, never a retry.
        self._succeeded(ctx, cand, attempt)
        headers = self._base_headers(ctx)
        content_type = _content_type(resp) if stream.same_protocol else b"text/event-stream"
        headers.append((b"content-type", content_type))
        headers.append((b"cache-control", b"no-cache"))
        ctx.committed = True
        ctx.events_relayed = produced
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        ctx.ttft_ms = ctx.elapsed_ms()
        try:
            if keep is not None and stream.completed:
                # The whole answer came with the first content; keep it before the client sees it.
                await keep(stream.final_response)
                keep = None
            await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
            await self._relay_rest(ctx, chunks, parser, stream, send, keep)
        except UpstreamError as err:
            ctx.outcome, ctx.error = Outcome.CUT, err.message
            await send({"type": "http.response.body", "body": stream.error_event(err)})
        finally:
            await resp.aclose()
            ctx.usage = stream.usage
            ctx.finish_reason = stream.finish_reason
            if ctx.outcome is Outcome.OK and stream.finish_reason in _INCOMPLETE_REASONS:
                ctx.outcome = Outcome.INCOMPLETE

    async def _relay_rest(
        self,
        ctx: RequestContext,
        chunks: AsyncIterator[bytes],
        parser: SSEParser,
        stream: StreamAdapter,
        send: Send,
        keep: Keeper | None = None,
    ) -> None:
        """Relay the rest of a committed stream, whole events at a time (the parser keeps any
        partial tail for the next chunk)."""
        take_region = stream.take_region
        async for chunk in chunks:
            region = parser.feed_region(chunk)
            if not region:
                continue
            out, produced = take_region(region)
            ctx.events_relayed += produced
            if keep is not None and stream.completed:
                await keep(stream.final_response)  # before the client sees the terminal event
                keep = None
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = [stream.take(event)[0] for event in parser.flush()]
        tail.append(stream.finish())
        if keep is not None and stream.completed:
            await keep(stream.final_response)
        if any(tail):
            await send({"type": "http.response.body", "body": b"".join(tail), "more_body": True})
        if stream.error is not None:
            ctx.outcome, ctx.error = Outcome.CUT, stream.error.message
        elif not stream.completed:
            # The upstream hung up mid-answer: tell the client in its protocol, not by silence.
            raise UpstreamStreamError("upstream stream ended before its terminal event")
        ctx.finished = True
        await send({"type": "http.response.body", "body": b""})

    def _note_response_id(
        self, ctx: RequestContext, cand: Candidate, call: UpstreamCall, event: str | None, data: bytes
    ) -> None:
        if (
            cand.protocol is not Protocol.OPENAI_RESPONSES
            or event != "response.created"
            or ctx.principal is None
        ):
            return
        parsed = _loads_or_none(data)
        if isinstance(parsed, dict):
            response = parsed.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.owners.remember(response["id"], ctx.principal.key_id, call.target)

    async def _resource(
        self, ctx: RequestContext, door: Door, headers: Mapping[str, str], query: str, send: Send
    ) -> None:
        """GET/DELETE /v1/responses/{id} (and its input_items): forwarded to the upstream that created
        the response, or answered from the gateway's store when the gateway produced it."""
        assert ctx.principal is not None and door.resource_id is not None
        target = self.owners.lookup(door.resource_id, ctx.principal.key_id)
        if target is None:
            if self._responses is None:
                raise NotFoundError(f"no response with id {door.resource_id!r}", code="not_found")
            answer = await self._stored_resource(ctx.principal.key_id, door, query)
            await send_bytes(send, 200, orjson.dumps(answer), self._base_headers(ctx))
            return
        provider = self._providers[target.provider_type]
        call = UpstreamCall(
            target=target,
            operation=door.operation,
            body=None,
            stream=False,
            headers=_forward_headers(headers),
            query=_forward_query(query),
            resource_id=door.resource_id,
            method="GET" if door.operation is Operation.RESPONSE_GET else "DELETE",
            action=door.action,
        )
        resp = await provider.send(call)
        try:
            data = await resp.read()
        finally:
            await resp.aclose()
        if resp.status >= 400:
            data = redact_secret(data, target.secret)
        if door.operation is Operation.RESPONSE_DELETE and resp.status < 300:
            self.owners.forget(door.resource_id)
        ctx.status = resp.status
        await send_bytes(send, resp.status, data, self._base_headers(ctx), _content_type(resp))

    async def _stored_resource(self, key_id: int, door: Door, query: str) -> dict[str, Any]:
        state = self._responses
        assert state is not None and door.resource_id is not None
        params = parse_qs(query)
        include = params.get("include[]", []) + params.get("include", [])
        if door.operation is Operation.RESPONSE_DELETE:
            return await state.delete(door.resource_id, key_id)
        if door.action == "input_items":
            limit = params.get("limit", ["20"])[0]
            return await state.input_items(
                door.resource_id,
                key_id,
                after=params.get("after", [None])[0],
                before=params.get("before", [None])[0],
                limit=int(limit) if limit.isdigit() else 20,
                order=params.get("order", ["desc"])[0],
                include=include,
            )
        return await state.get(door.resource_id, key_id, include=include)

    # --- responses -------------------------------------------------------------------------

    def _base_headers(self, ctx: RequestContext) -> RawHeaders:
        total = ctx.elapsed_ms()
        gateway = max(0.0, total - ctx.upstream_ms)
        timing = f"gateway;dur={gateway:.2f}, upstream;dur={ctx.upstream_ms:.2f}"
        return [(b"x-request-id", ctx.request_id.encode()), (b"server-timing", timing.encode())]

    async def _send_error(self, ctx: RequestContext, send: Send, err: IsthmusError) -> None:
        if ctx.committed:  # the answer has started: nothing more can be said in a new response
            log.warning("request %s failed after its answer started: %s", ctx.request_id, err.message)
            return
        ctx.status = err.status
        ctx.error = err.message
        if ctx.outcome is Outcome.OK:
            ctx.outcome = (
                Outcome.UPSTREAM_ERROR
                if isinstance(err, UpstreamError | NoCandidateError)
                else (Outcome.CLIENT_ERROR)
            )
        headers = self._base_headers(ctx)
        headers.extend((k.encode(), v.encode()) for k, v in err.headers.items())
        await send_bytes(send, err.status, wire.error_body(ctx.protocol_in, err), headers)

    async def _send_internal_error(self, ctx: RequestContext, send: Send) -> None:
        err = IsthmusError(f"the gateway failed on request {ctx.request_id}; its log has the details")
        ctx.outcome = Outcome.INTERNAL_ERROR
        if not ctx.committed:
            await self._send_error(ctx, send, err)
            return
        ctx.error = err.message
        if ctx.stream:  # the stream ends with an error event rather than just stopping
            event = wire.stream_error_event(ctx.protocol_in, err)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": event})

    async def _send_upstream_error(
        self, ctx: RequestContext, send: Send, err: UpstreamError, same_protocol: bool
    ) -> None:
        """A 4xx the caller caused: returned as is when the upstream speaks the caller's protocol."""
        if same_protocol and isinstance(err, UpstreamHTTPError) and err.upstream_status and err.body:
            ctx.status = err.upstream_status
            ctx.error = err.message
            ctx.outcome = Outcome.CLIENT_ERROR
            await send_bytes(send, err.upstream_status, err.body, self._base_headers(ctx))
            return
        status = err.upstream_status if err.upstream_status and 400 <= err.upstream_status < 500 else 502
        ctx.outcome = Outcome.CLIENT_ERROR
        await self._send_error(ctx, send, InvalidRequestError(err.message, status=status))


def _attempt(cand: Candidate, skipped: str | None = None) -> Attempt:
    return Attempt(
        candidate=cand.label,
        provider_id=cand.endpoint.provider_id,
        provider_name=cand.endpoint.provider_name,
        key_id=cand.key.id,
        key_name=cand.key.name,
        upstream_model=cand.upstream_model,
        protocol=cand.protocol,
        started=time.perf_counter(),
        cost_multiplier=cand.key.cost_multiplier,
        free_tier=cand.endpoint.free_tier,
        skipped=skipped,
    )


def _target(cand: Candidate) -> UpstreamTarget:
    endpoint = cand.endpoint
    return UpstreamTarget(
        provider_type=endpoint.provider_type,
        provider_name=endpoint.provider_name,
        base_url=endpoint.base_urls.get(cand.protocol),
        secret=cand.key.secret,
        model=cand.upstream_model,
        protocol=cand.protocol,
        headers=endpoint.headers,
        api_version=endpoint.api_version,
        connect_timeout=endpoint.timeouts.connect,
        idle_timeout=endpoint.timeouts.idle,
        total_timeout=endpoint.timeouts.total,
    )


def _loads_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _marking_finished(send: Send, ctx: RequestContext) -> Send:
    """``send`` that marks the response finished as its last body message goes out. Work may follow
    (a provider key's lease released in Redis): the client leaving then is no disconnect, and uvicorn's
    ``receive`` answers ``http.disconnect`` to the watcher as soon as the response is complete."""

    async def marking(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ctx.finished = True
        await send(message)

    return marking


def _content_type(resp: UpstreamResponse) -> bytes:
    return resp.headers.get("content-type", "application/json").encode("latin-1")


def _final_error(last: UpstreamError) -> IsthmusError:
    """One clear error for the client once every candidate failed, naming the last cause."""
    message = f"all upstream attempts failed; last: {last.message}"
    status = last.upstream_status
    if status == 429:
        return RateLimitedError(message, retry_after=last.retry_after)
    if isinstance(last, UpstreamTimeoutError):
        return UpstreamTimeoutError(message, phase=last.phase)
    if status in (503, 529):
        return UpstreamError(message, status=503)
    return UpstreamError(message)

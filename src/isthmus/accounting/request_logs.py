"""Request logs: what is kept of a request's headers and bodies, and the redaction applied first.

Levels: ``base`` keeps nothing beyond the usage record, ``headers`` adds request and response headers,
``full`` adds both bodies up to a cap (64 KiB each by default), cut with a marker. The gateway's
``log_detail`` setting picks the level; a gateway key's own ``log_detail`` overrides it.

Redaction happens when the log is built, before the record is queued, so secrets never reach the
queue, the spool file or the database:
- the values of credential headers (``authorization``, ``x-api-key``, ``x-goog-api-key``, ``api-key``,
  ``cookie``, ``set-cookie``, ``proxy-authorization``) are replaced whole;
- anywhere in headers and bodies: every provider secret, the caller's gateway key, anything shaped
  like a gateway key or admin token (another tenant's key pasted into a prompt: the gateway only
  keeps their hashes, so it recognises them by their prefix), ``key=`` query parameters, ``Bearer``
  tokens, and ``name: value`` / ``"name": "value"`` pairs of those headers.

A :class:`Redactor` compiles one regex for a snapshot's provider secrets; build it when the snapshot
is built, not per request. Secrets shorter than :data:`MIN_SECRET_LENGTH` are not treated as secrets
(a 3-letter test key would otherwise shred every body it occurs in).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from isthmus.accounting.records import LogLevel, RecordBundle, RequestLogRecord
from isthmus.crypto import ADMIN_TOKEN_PREFIX, GATEWAY_KEY_PREFIX

REDACTED = "[redacted]"
DEFAULT_BODY_CAP = 64 * 1024
MIN_SECRET_LENGTH = 8
TRUNCATION_MARKER = "…[truncated: {total} bytes in all]"
# Bytes kept past the cap before redaction, so a secret straddling the cap is seen whole; also the
# least that is dropped from the end of a cut body, so a secret cut in two never leaks its first half.
_TAIL_GUARD = 256

SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "set-cookie"}
)

_HEADER_NAMES = "|".join(sorted((re.escape(h) for h in SENSITIVE_HEADERS), key=len, reverse=True))
# ``"x-api-key": "v"``, ``x-api-key: v``, ``api-key=v``: the name, its separator, then the value.
# Quotes may be backslash-escaped (a JSON string inside a JSON body).
_HEADER_PAIR = (
    rf"(?P<hname>(?<![A-Za-z0-9_-])(?i:{_HEADER_NAMES})\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"(?P<hval>[^\\\"'\r\n&}]+)"
)
_QUERY_KEY = r"(?P<qname>[?&](?i:key|api_key|api-key)=)(?P<qval>[^&\s\"'#<>]+)"
_BEARER = r"(?P<bname>(?i:bearer)\s+)(?P<bval>[A-Za-z0-9._~+/=-]{8,})"
# Our own credentials by shape; the prefix is kept so a reader sees what kind of secret was there.
_OWN_TOKEN = (
    rf"(?P<tname>(?<![A-Za-z0-9_-])(?:{re.escape(GATEWAY_KEY_PREFIX)}|{re.escape(ADMIN_TOKEN_PREFIX)}))"
    r"(?P<tval>[A-Za-z0-9_-]{16,})"
)


def effective_level(gateway_default: str, key_override: str | None) -> LogLevel:
    """The log level of a request: the key's override when it has one, else the gateway's setting."""
    value = key_override or gateway_default
    try:
        return LogLevel(value)
    except ValueError:
        return LogLevel.BASE


class Redactor:
    """Masks credentials in text; one compiled pattern for a fixed set of secrets."""

    __slots__ = ("_longest", "_pattern")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._longest = len(known[0]) if known else 0
        parts = [_HEADER_PAIR, _QUERY_KEY, _BEARER, _OWN_TOKEN]
        if known:
            parts.insert(0, "(?P<secret>" + "|".join(re.escape(s) for s in known) + ")")
        self._pattern = re.compile("|".join(parts))

    @property
    def longest_secret(self) -> int:
        return self._longest

    def redact(self, text: str, extra_secrets: Iterable[str] = ()) -> str:
        """``text`` with every credential replaced by ``[redacted]``.

        ``extra_secrets`` are per-request values (the gateway key the caller sent).
        """
        for secret in extra_secrets:
            if len(secret) >= MIN_SECRET_LENGTH and secret in text:
                text = text.replace(secret, REDACTED)
        return self._pattern.sub(_replace, text)

    def headers(self, headers: Mapping[str, str], extra_secrets: Iterable[str] = ()) -> dict[str, str]:
        extra = tuple(extra_secrets)
        out: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            out[lower] = REDACTED if lower in SENSITIVE_HEADERS else self.redact(value, extra)
        return out


def _replace(match: re.Match[str]) -> str:
    if match.group("hname") is not None:
        return match.group("hname") + REDACTED
    if match.group("qname") is not None:
        return match.group("qname") + REDACTED
    if match.group("bname") is not None:
        return match.group("bname") + REDACTED
    if match.group("tname") is not None:
        return match.group("tname") + REDACTED
    return REDACTED


@functools.lru_cache(maxsize=8)
def _cached_redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """One-off redaction; the compiled pattern is cached for the last few secret sets."""
    return _cached_redactor(tuple(sorted(set(secrets)))).redact(text)


class BodyCapture:
    """Keeps the beginning of a body fed in chunks (for streams) and counts every byte.

    Keeps ``cap`` bytes plus a guard, enough for :func:`body_text` to redact and cut safely.
    """

    __slots__ = ("_keep", "_parts", "_stored", "total")

    def __init__(self, cap: int = DEFAULT_BODY_CAP, longest_secret: int = 0) -> None:
        self._keep = cap + max(_TAIL_GUARD, 2 * longest_secret)
        self._parts: list[bytes] = []
        self._stored = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._keep - self._stored
        if room <= 0 or not chunk:
            return
        piece = chunk[:room]
        self._parts.append(piece)
        self._stored += len(piece)

    def data(self) -> bytes:
        return b"".join(self._parts)


def body_text(
    body: bytes | BodyCapture,
    redactor: Redactor,
    extra_secrets: Iterable[str] = (),
    cap: int = DEFAULT_BODY_CAP,
) -> str:
    """A body as stored at the ``full`` level: decoded, redacted, then cut to ``cap`` bytes."""
    if isinstance(body, BodyCapture):
        data, total = body.data(), body.total
    else:
        data, total = body, len(body)
    extra = tuple(extra_secrets)
    guard = max(_TAIL_GUARD, 2 * max([redactor.longest_secret, *(len(s) for s in extra)]))
    kept = data[: cap + guard]
    text = redactor.redact(kept.decode("utf-8", errors="replace"), extra)
    if total <= cap and len(kept) == total and len(text.encode()) <= cap:
        return text
    encoded = text.encode()
    limit = cap
    if len(kept) < total:
        # The kept bytes end mid-body: their last ``guard`` bytes may hold the start of a secret the
        # pattern could not match, so none of them may survive the cut (redactions can shift them
        # left, towards the cap).
        limit = min(cap, max(0, len(encoded) - guard))
    return encoded[:limit].decode("utf-8", errors="ignore") + TRUNCATION_MARKER.format(total=total)


def build_request_log(
    request_id: str,
    level: LogLevel | str,
    redactor: Redactor,
    *,
    extra_secrets: Iterable[str] = (),
    request_headers: Mapping[str, str] | None = None,
    response_headers: Mapping[str, str] | None = None,
    request_body: bytes | BodyCapture | None = None,
    response_body: bytes | BodyCapture | None = None,
    body_cap: int = DEFAULT_BODY_CAP,
    created_at: datetime | None = None,
) -> RequestLogRecord | None:
    """The log row for one request at ``level``, redacted; None at ``base`` (nothing to store)."""
    level = LogLevel(level)
    if level is LogLevel.BASE:
        return None
    extra = tuple(extra_secrets)
    record = RequestLogRecord(
        request_id=request_id,
        level=level.value,
        created_at=created_at or datetime.now(UTC),
        request_headers=redactor.headers(request_headers, extra) if request_headers is not None else None,
        response_headers=redactor.headers(response_headers, extra) if response_headers is not None else None,
    )
    if level is LogLevel.FULL:
        if request_body is not None:
            record.request_body = body_text(request_body, redactor, extra, body_cap)
        if response_body is not None:
            record.response_body = body_text(response_body, redactor, extra, body_cap)
    return record


def redact_errors(bundle: RecordBundle, redactor: Redactor, extra_secrets: Iterable[str] = ()) -> None:
    """Mask credentials in the error texts of a bundle (upstream messages can echo a key)."""
    extra = tuple(extra_secrets)
    if bundle.usage.error:
        bundle.usage.error = redactor.redact(bundle.usage.error, extra)
    for attempt in bundle.attempts:
        if attempt.error:
            attempt.error = redactor.redact(attempt.error, extra)


__all__ = [
    "DEFAULT_BODY_CAP",
    "REDACTED",
    "SENSITIVE_HEADERS",
    "BodyCapture",
    "Redactor",
    "body_text",
    "build_request_log",
    "effective_level",
    "redact",
    "redact_errors",
]

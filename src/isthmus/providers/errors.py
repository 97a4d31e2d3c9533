"""Translating upstream failures into the gateway's error types, at the edge where they enter."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import orjson

from isthmus.errors import UpstreamHTTPError

_MAX_MESSAGE = 500


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after`` (seconds or HTTP date) or ``retry-after-ms``; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def upstream_message(body: bytes) -> str:
    """The human message inside an upstream error body of any of the protocols, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message")
            if isinstance(msg, str):
                return msg[:_MAX_MESSAGE]
        if isinstance(err, str):
            return err[:_MAX_MESSAGE]
    return body[:_MAX_MESSAGE].decode("utf-8", "replace").strip()


def redact_secret(body: bytes, secret: str | None) -> bytes:
    """``body`` with the provider key the call used masked. Some vendors echo the key they were
    sent in their error messages, and the gateway's callers must never learn a provider credential.
    Implausibly short secrets are left alone rather than mangling every match in the body."""
    if not secret or len(secret) < 8:
        return body
    return body.replace(secret.encode(), b"[redacted]")


def http_error(
    status: int, body: bytes, headers: Mapping[str, str], provider: str, secret: str | None = None
) -> UpstreamHTTPError:
    """The error for a non-2xx upstream answer; ``secret`` (the key the call used) is masked in
    both the message and the body that may be passed through."""
    body = redact_secret(body, secret)
    message = upstream_message(body) or f"HTTP {status}"
    # The caller sees 502 unless the upstream status itself is what they need (kept by the relay
    # when the error is returned as is).
    return UpstreamHTTPError(
        f"upstream {provider} answered {status}: {message}",
        upstream_status=status,
        body=body,
        retry_after=parse_retry_after(headers),
    )

"""The gateway's error tree.

Every failure the gateway reports is one of these. Front doors render them in the caller's protocol
shape (see ``protocols``); providers translate upstream HTTP failures into the ``Upstream*`` branch at
the edge where they enter, so routing decides failover on types, never on raw status codes.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Protocol-neutral category; each protocol maps it to its own error ``type``/``status`` names."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    UPSTREAM = "upstream"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


class IsthmusError(Exception):
    """Base class: an error with an HTTP status and a message safe to show the caller."""

    status: int = 500
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})
        if retry_after is not None:
            self.headers.setdefault("retry-after", str(max(1, round(retry_after))))


class ConfigError(IsthmusError):
    """The configuration (file, environment, secret key) is unusable; start-up stops."""

    kind = ErrorKind.INVALID_REQUEST


class InvalidRequestError(IsthmusError):
    status = 400
    kind = ErrorKind.INVALID_REQUEST


class AuthenticationError(IsthmusError):
    status = 401
    kind = ErrorKind.AUTHENTICATION


class PermissionDeniedError(IsthmusError):
    status = 403
    kind = ErrorKind.PERMISSION


class NotFoundError(IsthmusError):
    status = 404
    kind = ErrorKind.NOT_FOUND


class ConflictError(IsthmusError):
    status = 409
    kind = ErrorKind.INVALID_REQUEST


class PayloadTooLargeError(IsthmusError):
    status = 413
    kind = ErrorKind.TOO_LARGE


class RateLimitedError(IsthmusError):
    """A gateway limit (RPM/TPM/concurrency) refused the request."""

    status = 429
    kind = ErrorKind.RATE_LIMITED


class BudgetExceededError(RateLimitedError):
    """A budget is exhausted; the message names which one."""


class NoCandidateError(IsthmusError):
    """Routing found no usable upstream for the model (all disabled, cooling down or filtered out)."""

    status = 503
    kind = ErrorKind.UNAVAILABLE


# --- Upstream failures: raised by providers, consumed by the failover rules. ---------------------


class UpstreamError(IsthmusError):
    """Something went wrong talking to an upstream. ``upstream_status`` is the upstream's HTTP status."""

    status = 502
    kind = ErrorKind.UPSTREAM

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        body: bytes = b"",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, retry_after=retry_after, headers=headers)
        self.upstream_status = upstream_status
        self.body = body


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status (or an error object inside a 200 stream)."""


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the connection broke before a response started."""


class UpstreamTimeoutError(UpstreamError):
    """Connect, first-byte, idle or total timeout; ``phase`` says which."""

    status = 504
    kind = ErrorKind.TIMEOUT

    def __init__(self, message: str, *, phase: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.phase = phase


class UpstreamStreamError(UpstreamError):
    """The stream was empty, cut, or carried an error event."""

"""The admin API's field-level validation error, apart from the FastAPI glue so the services (which the
CLI and the gateway's start-up also use) do not pull the web framework in."""

from __future__ import annotations

from isthmus.errors import ErrorKind, IsthmusError


class AdminValidationError(IsthmusError):
    """A request that is well-formed JSON but names something impossible (an unknown provider in a route,
    a model that does not exist in an allow-list). ``param`` is the field path, like FastAPI's 422s."""

    status = 422
    kind = ErrorKind.INVALID_REQUEST

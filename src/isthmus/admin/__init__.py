"""The admin REST API (``/api``), console auth, and the logic the CLI shares with them.

``create_admin_api`` is imported on first use: the web framework behind it is only loaded when the
admin API is actually served, which keeps a gateway that only relays lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isthmus.admin.services import AdminServices
from isthmus.admin.services.auth import ensure_first_admin

if TYPE_CHECKING:
    from isthmus.admin.api import create_admin_api


def __getattr__(name: str) -> Any:
    if name == "create_admin_api":
        from isthmus.admin.api import create_admin_api

        return create_admin_api
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AdminServices", "create_admin_api", "ensure_first_admin"]

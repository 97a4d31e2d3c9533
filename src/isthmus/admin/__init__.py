"""The admin REST API (``/api``), console auth, and the logic the CLI shares with them."""

from isthmus.admin.api import create_admin_api
from isthmus.admin.services import AdminServices
from isthmus.admin.services.auth import ensure_first_admin

__all__ = ["AdminServices", "create_admin_api", "ensure_first_admin"]

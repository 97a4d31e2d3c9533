"""``create_admin_api``: the admin REST API as a FastAPI app, mounted by the gateway under ``/api``.

The gateway strips ``/api`` from the path and sets ``root_path="/api"``, so routes here are written
without the prefix while ``/api/docs`` and ``/api/openapi.json`` resolve correctly.
"""

from __future__ import annotations

from fastapi import FastAPI

from isthmus.admin.body_limit import BodyLimitMiddleware
from isthmus.admin.errors import install_error_handlers
from isthmus.admin.routes import auth, keys, models, providers, system, tenancy, usage
from isthmus.admin.services import AdminServices

DESCRIPTION = """\
Manage the gateway: providers and their keys, models with routes and prices, teams, users, gateway
keys, settings, and the audit log.

**Auth.** The console signs in with `POST /auth/login` (an HTTP-only session cookie; send the returned
`csrf_token` as the `x-csrf-token` header on every unsafe request). Scripts use
`Authorization: Bearer <admin token>` from `POST /tokens` and need no CSRF header.

**Errors** are always `{"error": {"message", "type", "field"?}}`.
"""


def create_admin_api(services: AdminServices) -> FastAPI:
    app = FastAPI(
        title="Isthmus admin API",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (auth, tenancy, keys, providers, models, system, usage):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.settings.max_admin_body_bytes)
    return app

"""An admin change reloads the request path's snapshot; one that changes nothing it reads keeps the
state in force (no rebuild), as does the periodic reload."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from isthmus.app import create_app
from isthmus.config import Settings, parse_config
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

from .conftest import passthrough_config


def _created(base: str, secret: str) -> int:
    """When the snapshot serving the request was built: ``created`` of the models it lists."""
    resp = httpx.get(f"{base}/v1/models", headers={"authorization": f"Bearer {secret}"})
    assert resp.status_code == 200, resp.text
    return next(m["created"] for m in resp.json()["data"] if m["id"] == "gpt-test")


def test_a_change_that_touches_no_snapshot_row_keeps_the_state_in_force(
    tmp_path: Path, database_url: str, mock_upstream: BackgroundMockServer
) -> None:
    settings = Settings(
        data_dir=tmp_path / "gateway",
        database_url=database_url,
        secret_key="snapshot-reload-secret-key",
        admin_username="admin",
        admin_password="admin-password-123",
    )
    server = ServerThread(create_app(settings, parse_config(passthrough_config(mock_upstream.url)))).start()
    try:
        admin = httpx.Client(base_url=f"{server.url}/api")
        login = admin.post("/auth/login", json={"username": "admin", "password": "admin-password-123"})
        admin.headers["x-csrf-token"] = login.json()["csrf_token"]
        created = admin.post("/keys", json={"name": "reload"}).json()
        key_id, secret = created["id"], created["secret"]
        built = _created(server.url, secret)
        time.sleep(1.1)  # a rebuild now would stamp a later second

        resp = admin.patch(f"/keys/{key_id}", json={"name": "reload"})  # the same name: no row changes
        assert resp.status_code == 200, resp.text
        assert _created(server.url, secret) == built

        resp = admin.patch(f"/keys/{key_id}", json={"name": "reloaded"})
        assert resp.status_code == 200, resp.text
        assert _created(server.url, secret) > built
    finally:
        server.stop()

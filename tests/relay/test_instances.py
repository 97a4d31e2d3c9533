"""Several gateway instances sharing one database and Redis: an admin change made through one
instance reaches the request path of the other without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from isthmus.app import create_app
from isthmus.config import Settings, parse_config
from isthmus.providers.mock_server import BackgroundMockServer
from servers import ServerThread

from .conftest import passthrough_config


def _instance(tmp_path: Path, name: str, database_url: str, redis_url: str, config: str) -> ServerThread:
    settings = Settings(
        data_dir=tmp_path / name,
        database_url=database_url,
        redis_url=redis_url,
        secret_key="shared-secret-key-material",
        admin_username="admin",
        admin_password="admin-password-123",
    )
    return ServerThread(create_app(settings, parse_config(config))).start()


def test_key_created_on_one_instance_works_on_the_other(
    tmp_path: Path, database_url: str, clean_redis_url: str, mock_upstream: BackgroundMockServer
) -> None:
    config = passthrough_config(mock_upstream.url)
    first = _instance(tmp_path, "a", database_url, clean_redis_url, config)
    second = _instance(tmp_path, "b", database_url, clean_redis_url, config)
    try:
        admin = httpx.Client(base_url=f"{first.url}/api")
        login = admin.post("/auth/login", json={"username": "admin", "password": "admin-password-123"})
        admin.headers["x-csrf-token"] = login.json()["csrf_token"]
        secret = admin.post("/keys", json={"name": "shared"}).json()["secret"]
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "across"}]}
        headers = {"authorization": f"Bearer {secret}"}
        deadline = time.monotonic() + 5
        while True:
            resp = httpx.post(f"{second.url}/v1/chat/completions", json=body, headers=headers)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "mock: across"
    finally:
        first.stop()
        second.stop()

"""Running the gateway under uvicorn (uvloop + httptools), with a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from isthmus.config import Settings, load_config
from isthmus.errors import ConfigError
from isthmus.logs import configure_logging

log = logging.getLogger("isthmus.server")


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def _migrate_in_child(settings: Settings, database_url: str) -> None:
    """Bring the schema up to date before any worker starts, in a child process: Alembic would stay
    resident (~11 MiB) in a server that imported it. Should that fail, the start-up migrates in
    process as it always does, and reports the failure there."""
    from isthmus.store.migrations import upgrade_in_child

    settings.data_dir.mkdir(parents=True, exist_ok=True)  # where the default SQLite file lives
    try:
        asyncio.run(upgrade_in_child(database_url))
    except Exception as exc:
        log.warning("migrating in a child process failed (%s); the start-up will migrate", exc)


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the
    # signal again; with the default handler that kills the process (status -15) after a clean stop,
    # which service managers report as a failure. This handler makes that re-raise (and a SIGTERM
    # before uvicorn starts listening) a normal exit.
    signal.signal(signal.SIGTERM, _exit_zero)
    file_config = load_config(settings.config) if settings.config else None
    host = settings.host or (file_config.server.host if file_config else "127.0.0.1")
    port = settings.port or (file_config.server.port if file_config else 8080)
    workers = settings.workers or (file_config.server.workers if file_config else 1)
    redis_url = settings.redis_url or (file_config.redis_url if file_config else None)
    if workers > 1 and not redis_url:
        raise ConfigError("workers > 1 needs a shared state backend: set ISTHMUS_REDIS_URL (or redis_url)")
    _migrate_in_child(
        settings, settings.resolved_database_url(file_config.database_url if file_config else None)
    )
    common = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace),
        "timeout_keep_alive": 75,
    }
    if workers > 1:
        # Each worker rebuilds the app from the environment; pass the resolved settings along.
        for name, value in (("ISTHMUS_CONFIG", settings.config), ("ISTHMUS_DATA_DIR", settings.data_dir)):
            if value is not None:
                os.environ[name] = str(value)
        uvicorn.run("isthmus.app:create_app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
        return
    from isthmus.app import create_app

    uvicorn.run(create_app(settings, file_config), **common)  # type: ignore[arg-type]

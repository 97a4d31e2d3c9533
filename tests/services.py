"""Throwaway PostgreSQL and Redis servers for the test session.

The fixtures in ``conftest.py`` use these. Each test process starts its own servers on free ports in a
temporary directory and stops them at the end, so concurrent test runs never share state and the
machine's system services (PostgreSQL on 5432, Redis on 6379) are never touched.

Both can be replaced by an existing server through ``ISTHMUS_TEST_POSTGRES_URL`` /
``ISTHMUS_TEST_REDIS_URL`` (e.g. in CI with service containers).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL_ENV = "ISTHMUS_TEST_POSTGRES_URL"
REDIS_URL_ENV = "ISTHMUS_TEST_REDIS_URL"

_T = TypeVar("_T")


class Server(Protocol):
    @property
    def url(self) -> str: ...

    def start(self) -> str: ...

    def stop(self) -> None: ...


_S = TypeVar("_S", bound=Server)


@contextlib.contextmanager
def started(make: Callable[[], _S], what: str, wait: Callable[[str], None] | None = None) -> Iterator[_S]:
    """A throwaway server, started (and waited for), stopped afterwards; a server that cannot be
    made or started fails the test, naming ``what``, rather than erroring with a traceback."""
    server: _S | None = None
    try:
        server = make()
        url = server.start()
        if wait is not None:
            wait(url)
    except ServiceError as exc:
        if server is not None:
            server.stop()
        pytest.fail(f"cannot start {what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


class ServiceError(RuntimeError):
    """A test service could not be started; the message says why and what to install."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_async_in_thread(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine on a private loop in another thread.

    Fixtures use this for small admin queries so they stay synchronous and never touch (or need)
    the session event loop that pytest-asyncio gives the tests.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    async def wrapper() -> _T:
        return await make()

    def target() -> None:
        try:
            result.append(asyncio.run(wrapper()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="test-service-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --- PostgreSQL ---------------------------------------------------------------------------------


def find_postgres_bin() -> Path:
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]

    def major(path: Path) -> float:
        match = re.search(r"/(\d+(?:\.\d+)?)/bin$", path.as_posix())
        return float(match.group(1)) if match else 0.0

    if not candidates:
        raise ServiceError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; "
            "install them with `make services-bin` (Debian package `postgresql`) "
            f"or point {POSTGRES_URL_ENV} at a server you own"
        )
    return max(candidates, key=major)


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temp dir, trust auth, superuser ``postgres``, on 127.0.0.1."""

    def __init__(self) -> None:
        self.bin_dir = find_postgres_bin()
        self.dir: Path | None = None
        self.port = 0
        self._as_user: list[str] = []
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        return [*self._as_user, str(self.bin_dir / tool), *args]

    def start(self) -> str:
        # initdb refuses to run as root, so as root everything runs as the `postgres` system user in a
        # directory it owns.
        base = Path(tempfile.mkdtemp(prefix="isthmus-test-pg-"))
        self.dir = base
        if os.geteuid() == 0:
            try:
                pg_user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "running as root but there is no `postgres` system user to run initdb as"
                ) from None
            os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        data = base / "pg"
        # -N: no fsync; a throwaway cluster needs no durability.
        init_args = ["-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"]
        init = _run(self._cmd("initdb", *init_args))
        if init.returncode != 0:
            raise ServiceError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        last = ""
        for _ in range(3):  # the free port can be taken between choosing and binding it
            self.port = free_port()
            options = (
                f"-p {self.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
            )
            log = str(base / "log")
            start = _run(self._cmd("pg_ctl", "-D", str(data), "-o", options, "-l", log, "-w", "start"))
            if start.returncode == 0:
                self._started = True
                return self.url
            last = f"{start.stdout}\n{start.stderr}\n{_tail(base / 'log')}"
        raise ServiceError(f"pg_ctl start failed:\n{last}")

    def stop(self) -> None:
        if self.dir is None:
            return
        if self._started:
            _run(self._cmd("pg_ctl", "-D", str(self.dir / "pg"), "-m", "immediate", "-w", "stop"), timeout=60)
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _pg_execute(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=30)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def wait_for_postgres(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            run_async_in_thread(lambda: _pg_execute(url, "SELECT 1"))
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"PostgreSQL at {make_url(url)!r} is not answering: {exc}") from exc
            time.sleep(0.2)


def create_database(server_url: str, prefix: str = "test") -> str:
    """Create an empty database on the server; return its SQLAlchemy URL (same driver as given)."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    run_async_in_thread(lambda: _pg_execute(server_url, f'CREATE DATABASE "{name}"'))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    name = make_url(database_url).database
    # FORCE ends connections a test left open (an engine it did not dispose), so cleanup never hangs.
    run_async_in_thread(lambda: _pg_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- Redis ------------------------------------------------------------------------------------


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ThrowawayRedis:
    """A ``redis-server`` with no persistence, daemonised, in a temp dir."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server not found on PATH; install it with `make services-bin` (Debian package "
                f"`redis-server`) or point {REDIS_URL_ENV} at a server you own"
            )
        self.binary = binary
        self.dir: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="isthmus-test-redis-"))
        last = ""
        for _ in range(3):
            self.port = free_port()
            proc = _run(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "yes",
                    "--dir",
                    str(self.dir),
                    "--pidfile",
                    str(self.dir / "pid"),
                    "--logfile",
                    str(self.dir / "log"),
                ]
            )
            deadline = time.monotonic() + 10
            while proc.returncode == 0 and time.monotonic() < deadline:
                if redis_ping("127.0.0.1", self.port):
                    return self.url
                time.sleep(0.05)
            last = f"{proc.stdout}\n{proc.stderr}\n{_tail(self.dir / 'log')}"
            self._kill()
        raise ServiceError(f"redis-server did not start:\n{last}")

    def _kill(self) -> None:
        if self.dir is None:
            return
        pid_file = self.dir / "pid"
        deadline = time.monotonic() + 5
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            pid_file.unlink()

    def stop(self) -> None:
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def wait_for_redis(url: str, timeout: float = 10) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"Redis at {url} is not answering PING: {exc}") from exc
                time.sleep(0.1)
    finally:
        client.close()


class RestartablePostgres(ThrowawayPostgres):
    """A throwaway server that can be stopped and started again on the same port and data."""

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )

    def halt(self) -> None:
        assert self.dir is not None
        result = _run(self._cmd("pg_ctl", "-D", str(self.dir / "pg"), "-m", "fast", "-w", "stop"), timeout=60)
        if result.returncode != 0:
            raise ServiceError(f"pg_ctl stop failed: {result.stdout}\n{result.stderr}")

    def resume(self) -> None:
        assert self.dir is not None
        log = str(self.dir / "log")
        args = ("-D", str(self.dir / "pg"), "-o", self._options(), "-l", log, "-w", "start")
        result = _run(self._cmd("pg_ctl", *args), timeout=60)
        if result.returncode != 0:
            raise ServiceError(f"pg_ctl start failed: {result.stdout}\n{result.stderr}")

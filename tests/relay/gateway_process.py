"""The gateway as users run it: ``isthmus serve --config FILE`` in its own process, on a free port,
with its data in a temporary directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from servers import free_port

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


class GatewayProcess:
    """Start with :meth:`start` (or as a context manager); stdout and stderr go to files in
    ``workdir`` so a chatty process can never block on a full pipe."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        # Nothing from the developer's environment leaks in (a set ISTHMUS_DATABASE_URL, say).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
        self.env.update(
            ISTHMUS_DATA_DIR=str(workdir / "data"),
            ISTHMUS_PORT=str(self.port),
            ISTHMUS_SECRET_KEY="process-test-secret-key-material",
            ISTHMUS_ADMIN_USERNAME="admin",
            ISTHMUS_ADMIN_PASSWORD="admin-password-123",
        )
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [ISTHMUS, "serve", "--config", str(self.config)],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the gateway did not become ready in {timeout:g}s:\n{self.output()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

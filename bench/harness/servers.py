"""Start every server of a run: the fake upstream, and the targets in front of it.

Each target is started once and kept for the whole run; rounds alternate between them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs, variants
from harness.payloads import PAYLOAD_DIR, UPSTREAM_ROUTES

BENCH_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = BENCH_DIR / "templates"
LITELLM_VENV = BENCH_DIR / ".venvs" / "litellm"
CLIENT_KEY = "sk-bench-0123456789abcdef"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def litellm_binary() -> Path | None:
    path = LITELLM_VENV / "bin" / "litellm"
    return path if path.exists() else None


def render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise ValueError(f"{template}: unfilled placeholder near {text[text.index('{{') :][:40]!r}")
    return text


def _nginx_locations() -> str:
    blocks = []
    for path, (name, ctype) in UPSTREAM_ROUTES.items():
        file = PAYLOAD_DIR / name
        blocks.append(
            f"        location = {path} {{ default_type {ctype}; alias {file}; error_page 405 =200 $uri; }}"
        )
    return "\n".join(blocks)


@dataclass
class Server:
    name: str
    proc: procs.Proc
    port: int


@dataclass
class Lab:
    """The servers of one run, in a scratch directory."""

    workdir: Path
    pinning: procs.Pinning
    servers: dict[str, Server] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.servers['upstream'].port}"

    def _user_line(self) -> str:
        # nginx's workers drop to `nobody` when started as root; the scratch dir is root's.
        return "user root;" if os.geteuid() == 0 else ""

    def _add(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        pin: set[int] | None,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Server:
        proc = procs.spawn(name, argv, self.workdir, pin=pin, env=env)
        server = Server(name, proc, port)
        self.servers[name] = server
        procs.wait_for_port(proc, port, timeout)
        return server

    def start_upstream(self, prefer_nginx: bool = True) -> str:
        port = procs.free_port()
        nginx = nginx_binary() if prefer_nginx else None
        if nginx is None:
            argv = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(port)]
            self._add("upstream", argv, port, pin=self.pinning.load)
            return "python (nginx not installed)"
        conf = self.workdir / "nginx-upstream.conf"
        values = {
            "USER": self._user_line(),
            "DIR": str(self.workdir),
            "PORT": str(port),
            "LOCATIONS": _nginx_locations(),
        }
        conf.write_text(render("nginx-upstream.conf", values))
        self._add("upstream", [nginx, "-p", str(self.workdir), "-c", str(conf)], port, pin=self.pinning.load)
        return "nginx"

    def start_nginx_proxy(self) -> bool:
        nginx = nginx_binary()
        if nginx is None:
            self.skipped["nginx"] = "nginx is not installed (make bench-deps)"
            return False
        port = procs.free_port()
        conf = self.workdir / "nginx-proxy.conf"
        values = {
            "USER": self._user_line(),
            "DIR": str(self.workdir),
            "PORT": str(port),
            "KEY": CLIENT_KEY,
            "UPSTREAM_PORT": str(self.servers["upstream"].port),
        }
        conf.write_text(render("nginx-proxy.conf", values))
        self._add("nginx", [nginx, "-p", str(self.workdir), "-c", str(conf)], port, pin=self.pinning.target)
        return True

    def start_passthrough(
        self, wrap: list[str] | None = None, *, server: str = "uvicorn", client: str = "aiohttp"
    ) -> None:
        """The bare passthrough; another ASGI server or HTTP client makes a variant of its own name."""
        port = procs.free_port()
        argv = [
            *(wrap or [sys.executable]),
            str(BENCH_DIR / "passthrough.py"),
            "--port",
            str(port),
            "--upstream",
            self.upstream_url,
            "--key",
            CLIENT_KEY,
            "--server",
            server,
            "--client",
            client,
        ]
        name = (
            "passthrough"
            + (f"-{server}" if server != "uvicorn" else "")
            + (f"-{client}" if client != "aiohttp" else "")
        )
        env = {"PYTHONPATH": str(BENCH_DIR)} if server == "granian" else None
        self._add(name, argv, port, pin=self.pinning.target, env=env)

    def start_isthmus(
        self, wrap: list[str] | None = None, ref: str | None = None, variant: str | None = None
    ) -> None:
        """``wrap`` runs the server under another program (a profiler): ``[*wrap, isthmus, serve, …]``;
        ``ref`` runs that git revision's ``src/`` instead of the working tree (others may be mid-edit);
        ``variant`` switches parts off in a copy of it (``harness/variants.py``)."""
        port = procs.free_port()
        conf = self.workdir / "isthmus.yaml"
        values = {
            "PORT": str(port),
            "DIR": str(self.workdir),
            "UPSTREAM": self.upstream_url,
            "KEY": CLIENT_KEY,
        }
        conf.write_text(render("isthmus.yaml", values))
        env = {
            "ISTHMUS_DATA_DIR": str(self.workdir / "isthmus-data"),
            "ISTHMUS_LOG_LEVEL": "warning",
            "ISTHMUS_ADMIN_USERNAME": "bench-admin",
            "ISTHMUS_ADMIN_PASSWORD": "bench-admin-password",
        }
        for name in (
            "ISTHMUS_CONFIG",
            "ISTHMUS_DATABASE_URL",
            "ISTHMUS_REDIS_URL",
            "ISTHMUS_HOST",
            "ISTHMUS_PORT",
            "ISTHMUS_WORKERS",
        ):
            os.environ.pop(name, None)
        if ref is not None or variant is not None:
            src = self._export_src(ref)
            if variant is not None:
                variants.apply(src, variant)
            env["PYTHONPATH"] = str(src)
        isthmus = Path(sys.executable).parent / "isthmus"
        argv = [*(wrap or []), str(isthmus), "serve", "--config", str(conf)]
        self._add("isthmus", argv, port, pin=self.pinning.target, env=env, timeout=60)

    def _export_src(self, ref: str | None) -> Path:
        """``git archive REF src`` (None: a copy of the working tree's) into the scratch dir; on
        PYTHONPATH it shadows the editable install."""
        dest = self.workdir / "isthmus-src"
        if ref is None:
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(BENCH_DIR.parent / "src", dest / "src", ignore=skip)
            return dest / "src"
        dest.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "archive", "--format=tar", ref, "src"],
            capture_output=True, check=True,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return dest / "src"

    def start_litellm(self) -> bool:
        binary = litellm_binary()
        if binary is None:
            self.skipped["litellm"] = "LiteLLM is not set up (one-time: make bench-litellm)"
            return False
        port = procs.free_port()
        conf = self.workdir / "litellm.yaml"
        conf.write_text(render("litellm.yaml", {"UPSTREAM": self.upstream_url, "KEY": CLIENT_KEY}))
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",
            "DISABLE_SCHEMA_UPDATE": "True",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST"):
            os.environ.pop(name, None)
        argv = [str(binary), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port)]
        self._add("litellm", argv, port, pin=self.pinning.target, env=env, timeout=180)
        return True

    def stop_all(self, timeout: float = 10.0) -> None:
        for server in reversed(list(self.servers.values())):
            procs.stop(server.proc, timeout)

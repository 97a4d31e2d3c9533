"""The real coding CLIs: pinned npm packages installed once into a cache directory, and headless runs.

The cache is ``.e2e-cache/`` at the repository root (``ISTHMUS_E2E_CACHE`` overrides it); each package
gets its own npm prefix, so a version bump installs beside the old one and nothing is shared with the
machine's global npm. ``python tests/e2e/clients.py`` installs them ahead of a test run (``make
e2e-clients``); the test session does the same on first use.

Each :class:`CliKind` knows how one CLI is pointed at a gateway without touching the real user's
files: a scratch ``HOME`` (and ``CODEX_HOME`` / ``~/.gemini/settings.json``), telemetry, auto-update
and retries off, and a proxy "tripwire" for anything that is not 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class NpmPackage:
    key: str
    npm_name: str
    version: str
    bin_name: str

    @property
    def spec(self) -> str:
        return f"{self.npm_name}@{self.version}"


CLAUDE_CODE = NpmPackage("claude-code", "@anthropic-ai/claude-code", "2.1.197", "claude")
CODEX = NpmPackage("codex", "@openai/codex", "0.169.0", "codex")
GEMINI_CLI = NpmPackage("gemini-cli", "@google/gemini-cli", "0.61.0", "gemini")
PACKAGES = (CLAUDE_CODE, CODEX, GEMINI_CLI)


class InstallError(Exception):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_E2E_CACHE") or REPO_ROOT / ".e2e-cache")


def prefix_dir(package: NpmPackage) -> Path:
    return cache_dir() / "npm" / f"{package.key}-{package.version}"


def bin_path(package: NpmPackage) -> Path:
    return prefix_dir(package) / "node_modules" / ".bin" / package.bin_name


def installed_version(package: NpmPackage) -> str | None:
    manifest = prefix_dir(package) / "node_modules" / package.npm_name / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version if isinstance(version, str) else None


def is_installed(package: NpmPackage) -> bool:
    return installed_version(package) == package.version and bin_path(package).exists()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialises installs between test sessions started at the same time on one machine."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed(packages: tuple[NpmPackage, ...] = PACKAGES) -> dict[str, Path]:
    """Install whatever pinned package is missing (in parallel) and return each CLI's executable.

    Raises :class:`InstallError` with npm's own output when npm is absent or an install fails.
    """
    with _install_lock():
        missing = [p for p in packages if not is_installed(p)]
        if missing:
            npm = shutil.which("npm")
            if npm is None:
                raise InstallError("npm is not on PATH: the end-to-end tests need Node.js 20 and npm")
            started = time.monotonic()
            jobs: list[tuple[NpmPackage, subprocess.Popen[str]]] = []
            for package in missing:
                prefix = prefix_dir(package)
                prefix.mkdir(parents=True, exist_ok=True)
                argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
                argv += ["--save-exact", "--loglevel=error", package.spec]
                jobs.append(
                    (
                        package,
                        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                    )
                )
            failures: list[str] = []
            for package, proc in jobs:
                try:
                    output, _ = proc.communicate(timeout=INSTALL_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    output, _ = proc.communicate()
                    failures.append(f"{package.spec}: npm install timed out\n{output}")
                    continue
                if proc.returncode != 0 or not is_installed(package):
                    found = installed_version(package)
                    failures.append(
                        f"{package.spec}: npm install exited {proc.returncode} (installed: {found})\n{output}"
                    )
            if failures:
                raise InstallError(
                    "cannot install the pinned CLIs from the npm registry:\n" + "\n".join(failures)
                )
            elapsed = time.monotonic() - started
            names = ", ".join(p.spec for p in missing)
            print(f"[e2e] installed {names} in {elapsed:.1f}s", file=sys.stderr, flush=True)
    return {p.key: bin_path(p) for p in packages}


# --- running a CLI ----------------------------------------------------------------------------


@dataclass
class CliRun:
    argv: list[str]
    cwd: Path
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run_cli(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT_S) -> CliRun:
    """Run one CLI with no stdin in its own process group (killed whole on timeout: the npm wrappers
    start the real binary as a child)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return CliRun(argv, cwd, proc.returncode, stdout, stderr, time.monotonic() - started, timed_out)


def base_env(home: Path, proxy_url: str) -> dict[str, str]:
    """A minimal environment: nothing from the developer's own (keys, base URLs, proxies) leaks in.

    Every proxy variable points at the tripwire, and only 127.0.0.1/localhost bypass it, so any
    attempt to reach another host is seen (and refused) instead of going out.
    """
    node = shutil.which("node")
    path = [str(Path(node).parent)] if node else []
    path += ["/usr/local/bin", "/usr/bin", "/bin"]
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.pathsep.join(dict.fromkeys(path)),
        "HOME": str(home),
        "USER": "e2e",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": str(tmp),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = proxy_url
    return env


@dataclass
class Invocation:
    """What a test runs: argv and environment, plus the files written for the CLI's configuration."""

    argv: list[str]
    env: dict[str, str]
    config_files: dict[str, str] = field(default_factory=dict)


class CliKind:
    """One CLI: how it is configured for a gateway and which front door it uses."""

    name: str
    package: NpmPackage
    door: str  # the gateway path (or path fragment) its generation requests use
    # Public model names it asks for: the first is the one passed explicitly.
    models: tuple[str, ...]

    def invocation(
        self, exe: Path, gateway_url: str, api_key: str, home: Path, prompt: str, *, tool: bool, upstream: str
    ) -> Invocation:
        raise NotImplementedError

    def tool_prompt(self, work: Path, nonce: str) -> tuple[str, str]:
        """A prompt that makes the mock upstream ask for a harmless tool, and the text the tool's
        output must contain (computed by the tool, so it cannot come from the prompt itself)."""
        raise NotImplementedError


class ClaudeCode(CliKind):
    name = "claude-code"
    package = CLAUDE_CODE
    door = "/v1/messages"
    models = ("claude-sonnet-4-5", "claude-haiku-4-5")

    def invocation(
        self, exe: Path, gateway_url: str, api_key: str, home: Path, prompt: str, *, tool: bool, upstream: str
    ) -> Invocation:
        env = {
            "ANTHROPIC_BASE_URL": gateway_url,
            "ANTHROPIC_API_KEY": api_key,
            # Background calls (titles, summaries) go to the "haiku" model: keep it on a routed name.
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": self.models[1],
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        argv = [str(exe), "-p", prompt, "--model", self.models[0]]
        if tool:
            # -p mode refuses tools that need a permission prompt; allow exactly echo.
            argv += ["--allowedTools", "Bash(echo:*)"]
        return Invocation(argv, env)

    def tool_prompt(self, work: Path, nonce: str) -> tuple[str, str]:
        command = f"echo e2e-$((6*7))-{nonce}"
        args = json.dumps({"command": command, "description": "print a marker"})
        return f"Please use the Bash tool args={args}", f"e2e-42-{nonce}"


class Codex(CliKind):
    name = "codex"
    package = CODEX
    door = "/v1/responses"
    models = ("gpt-5-codex",)
    key_env = "ISTHMUS_API_KEY"

    def config_toml(self, gateway_url: str, upstream: str) -> str:
        # Chat Completions has no web search tool, and the gateway refuses a request it would have to
        # silently drop a tool from (docs/fidelity.md): for a Chat-backed model, Codex must not offer it.
        web_search = 'web_search = "disabled"\n' if upstream == "openai-chat" else ""
        return f"""model = "{self.models[0]}"
model_provider = "isthmus"
check_for_update_on_startup = false
{web_search}
[model_providers.isthmus]
name = "Isthmus"
base_url = "{gateway_url}/v1"
env_key = "{self.key_env}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
unbounded_connection_retries = false
"""

    def invocation(
        self, exe: Path, gateway_url: str, api_key: str, home: Path, prompt: str, *, tool: bool, upstream: str
    ) -> Invocation:
        codex_home = home / ".codex"
        config = self.config_toml(gateway_url, upstream)
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(config)
        env = {"CODEX_HOME": str(codex_home), self.key_env: api_key}
        argv = [str(exe), "exec", "--skip-git-repo-check", "--ephemeral", prompt]
        return Invocation(argv, env, {"$CODEX_HOME/config.toml": config})

    def tool_prompt(self, work: Path, nonce: str) -> tuple[str, str]:
        args = json.dumps({"cmd": f"echo e2e-$((6*7))-{nonce}"})
        return f"use the exec_command tool args={args}", f"e2e-42-{nonce}"


GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {
        "enableAutoUpdate": False,
        "enableAutoUpdateNotification": False,
        "maxAttempts": 1,
        "retryFetchErrors": False,
    },
}


class GeminiCli(CliKind):
    name = "gemini-cli"
    package = GEMINI_CLI
    door = ":streamGenerateContent"
    models = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite")

    def invocation(
        self, exe: Path, gateway_url: str, api_key: str, home: Path, prompt: str, *, tool: bool, upstream: str
    ) -> Invocation:
        settings = json.dumps(GEMINI_SETTINGS, indent=2)
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(settings)
        env = {
            "GEMINI_API_KEY": api_key,
            "GOOGLE_GEMINI_BASE_URL": gateway_url,
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            # Test speed only: skips the CLI re-spawning itself with a larger heap (~2 s per run).
            "GEMINI_CLI_NO_RELAUNCH": "true",
        }
        argv = [str(exe), "-p", prompt, "-m", self.models[0]]
        return Invocation(argv, env, {"~/.gemini/settings.json": settings})

    def tool_prompt(self, work: Path, nonce: str) -> tuple[str, str]:
        marker = f"e2e-file-{nonce[::-1]}"
        target = work / "marker.txt"
        target.write_text(marker + "\n")
        args = json.dumps({"file_path": str(target)})
        return f"use the read_file tool args={args}", marker


CLI_KINDS: dict[str, CliKind] = {kind.name: kind for kind in (ClaudeCode(), Codex(), GeminiCli())}


if __name__ == "__main__":
    try:
        paths = ensure_installed()
    except InstallError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    for key, path in paths.items():
        print(f"{key}: {path}")

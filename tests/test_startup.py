"""Starting the gateway as users do (`isthmus serve` in a process): bad set-ups fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from servers import free_port

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))

CONFIG = """
providers:
  - name: up
    type: openai
    base_url: http://127.0.0.1:9/v1
    keys: [{name: k, secret: provider-secret-value}]
models:
  - name: m
    routes: [{provider: up, model: m}]
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    env.update(
        ISTHMUS_DATA_DIR=str(data_dir),
        ISTHMUS_PORT=str(free_port()),
        ISTHMUS_ADMIN_USERNAME="admin",
        ISTHMUS_ADMIN_PASSWORD="admin-password-123",
        **extra,
    )
    return env


def _serve_until_ready(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [ISTHMUS, "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{env['ISTHMUS_PORT']}/readyz"
    for _ in range(300):
        if proc.poll() is not None:
            return proc
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return proc


def test_wrong_secret_key_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG)
    first = _serve_until_ready(config, _env(tmp_path / "data", ISTHMUS_SECRET_KEY="the-first-secret-key"))
    assert first.poll() is None, first.stdout.read() if first.stdout else ""
    first.terminate()
    first.wait(timeout=20)
    second = subprocess.run(
        [ISTHMUS, "serve", "--config", str(config)],
        env=_env(tmp_path / "data", ISTHMUS_SECRET_KEY="a-different-secret-key"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    output = second.stdout + second.stderr
    assert "secret key" in output.lower()
    assert "Traceback" not in output


def test_malformed_config_is_refused_before_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("providers:\n  - name: x\n    type: openai\n    keys: [\n")
    result = subprocess.run(
        [ISTHMUS, "serve", "--config", str(config)],
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "invalid YAML" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "isthmus.db").exists()


def test_missing_env_var_is_named(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG.replace("provider-secret-value", '"${SURELY_NOT_SET_VARIABLE}"'))
    result = subprocess.run(
        [ISTHMUS, "serve", "--config", str(config)],
        env=_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        "providers[0].keys[0].secret: environment variable SURELY_NOT_SET_VARIABLE is not set"
        in result.stderr
    )

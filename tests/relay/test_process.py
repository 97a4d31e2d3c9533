"""The gateway in its own process, as users run it: memory under a huge stream, graceful SIGTERM,
the README quickstart, and logs that never carry a secret."""

from __future__ import annotations

import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from isthmus.protocols.sse import SSEParser

from .gateway_process import GatewayProcess
from .upstreams import BigStreamUpstream, ErrorUpstream

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
QUICKSTART_KEY = "sk-isthmus-quickstart-0000000000"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def _chat_body(model: str, text: str = "hi", stream: bool = True) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


def _sse_text(raw: bytes) -> str:
    """The assistant text of a Chat Completions stream."""
    out = []
    for event in SSEParser().feed(raw):
        if event.data.startswith(b"{"):
            chunk = event.json()
            for choice in chunk.get("choices") or ():
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


# --- memory -------------------------------------------------------------------------------------


def _drain(gw: GatewayProcess, model: str, key: str) -> tuple[int, bytes]:
    """Read a whole stream as it arrives, keeping only its size and its last bytes."""
    size, tail = 0, b""
    headers = {"authorization": f"Bearer {key}"}
    with httpx.stream(
        "POST", f"{gw.url}/v1/chat/completions", json=_chat_body(model), headers=headers, timeout=60
    ) as resp:
        assert resp.status_code == 200, resp.read()
        for chunk in resp.iter_raw():
            size += len(chunk)
            tail = (tail + chunk)[-256:]
    return size, tail


class _PeakRSS:
    """Samples a process's resident set size in a thread; ``peak`` is the largest seen."""

    # Every 2 ms: the relay passes the 50 MB stream in a fifth of a second, and a sampler that sees
    # only a handful of points could miss the peak it is there to catch.
    def __init__(self, pid: int, every: float = 0.002) -> None:
        self._proc = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self.samples += 1
            self._stop.wait(self._every)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_50mb_stream_does_not_grow_gateway_memory(tmp_path: Path) -> None:
    key = "sk-isthmus-memory-" + secrets.token_hex(8)
    upstream = BigStreamUpstream()
    with upstream.server() as server:
        config = f"""
providers:
  - name: big
    type: openai
    base_url: {server.url}/v1
    keys: [{{name: k, secret: big-secret}}]
models:
  - name: warm
    routes: [{{provider: big, model: "{4 * MB}"}}]
  - name: huge
    routes: [{{provider: big, model: "{50 * MB}"}}]
keys:
  - {{name: t, secret: {key}}}
"""
        with GatewayProcess(_write(tmp_path, config), tmp_path / "gw") as gw:
            # Warm up the whole path (imports, pools, buffers) before taking the baseline.
            for _ in range(2):
                _drain(gw, "warm", key)
            baseline = psutil.Process(gw.pid).memory_info().rss
            with _PeakRSS(gw.pid) as rss:
                size, tail = _drain(gw, "huge", key)
            # Every event's "model" is renamed to the public name, so a little less than 50 MB arrives.
            assert size >= 49 * MB
            assert tail.endswith(b"data: [DONE]\n\n")
            assert rss.samples > 20, "too few memory samples to trust the peak"
            growth = rss.peak - baseline
            assert growth < 15 * MB, f"gateway RSS grew by {growth / MB:.1f} MB while relaying 50 MB"


# --- graceful SIGTERM ---------------------------------------------------------------------------


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_lets_a_stream_finish_then_exits_cleanly(tmp_path: Path) -> None:
    key = "sk-isthmus-sigterm-" + secrets.token_hex(8)
    config = f"""
providers:
  - {{name: mock, type: mock}}
models:
  - name: slow
    routes: [{{provider: mock, model: "mock-gpt+tps=5+tokens=12"}}]
keys:
  - {{name: t, secret: {key}}}
"""
    with GatewayProcess(_write(tmp_path, config), tmp_path / "gw") as gw:
        headers = {"authorization": f"Bearer {key}"}
        url = f"{gw.url}/v1/chat/completions"
        received = b""
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", url, json=_chat_body("slow", "one two three"), headers=headers) as resp,
        ):
            assert resp.status_code == 200
            chunks = resp.iter_raw()
            while b'"content"' not in received:
                received += next(chunks)
            terminated_at = time.monotonic()
            gw.signal(signal.SIGTERM)
            refused = False
            while not refused and time.monotonic() - terminated_at < 1.5:
                refused = _refuses_connections(gw.port)
                time.sleep(0.05)
            refused_at = time.monotonic()
            for chunk in chunks:
                received += chunk
            finished_at = time.monotonic()
        assert refused, "the gateway still accepted new connections after SIGTERM"
        assert finished_at - refused_at > 0.5, "the refusal was not observed while the stream ran"
        assert received.endswith(b"data: [DONE]\n\n"), received[-200:]
        assert _sse_text(received) == " ".join(["mock:", "one", "two", "three"] * 3)
        assert gw.wait(timeout=20) == 0, gw.output()
        assert "Traceback" not in gw.output()


# --- the README quickstart ----------------------------------------------------------------------


def test_readme_quickstart_requests(tmp_path: Path) -> None:
    with GatewayProcess(REPO / "examples" / "quickstart.yaml", tmp_path / "gw") as gw:
        bearer = {"Authorization": f"Bearer {QUICKSTART_KEY}", "Content-Type": "application/json"}
        chat = b'{"model":"mock-gpt","messages":[{"role":"user","content":"Hello, Isthmus"}]}'
        resp = httpx.post(f"{gw.url}/v1/chat/completions", content=chat, headers=bearer)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "mock: Hello, Isthmus"

        streamed = (
            b'{"model":"mock-gpt","messages":[{"role":"user","content":"Hello, Isthmus"}],"stream":true}'
        )
        resp = httpx.post(f"{gw.url}/v1/chat/completions", content=streamed, headers=bearer)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert resp.content.endswith(b"data: [DONE]\n\n")
        assert _sse_text(resp.content) == "mock: Hello, Isthmus"

        resp = httpx.post(
            f"{gw.url}/v1/messages",
            headers={
                "x-api-key": QUICKSTART_KEY,
                "anthropic-version": "2023-06-01",
                "Content-Type": "application/json",
            },
            content=b'{"model":"mock-claude","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}',
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["content"][0]["text"] == "mock: Hello"

        resp = httpx.post(
            f"{gw.url}/v1beta/models/mock-gemini:generateContent",
            headers={"x-goog-api-key": QUICKSTART_KEY, "Content-Type": "application/json"},
            content=b'{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}',
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["candidates"][0]["content"]["parts"][0]["text"] == "mock: Hello"


# --- logs ---------------------------------------------------------------------------------------


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            entry = orjson.loads(line)
            assert isinstance(entry, dict) and {"level", "message"} <= entry.keys(), line
            yield entry


def test_logs_never_contain_secrets(tmp_path: Path) -> None:
    gateway_key = "sk-isthmus-logs-" + secrets.token_hex(12)
    # Not shaped like any known key format, so only never logging it keeps it out of the logs.
    provider_secret = "provsecret" + secrets.token_hex(12)
    upstream = ErrorUpstream()
    with upstream.server() as server:
        config = f"""
providers:
  - {{name: mock, type: mock}}
  - name: failing
    type: openai
    base_url: {server.url}/v1
    keys: [{{name: k, secret: "{provider_secret}"}}]
models:
  - name: fine
    routes: [{{provider: mock, model: mock-gpt}}]
  - name: broken
    routes: [{{provider: failing, model: status-500}}]
  - name: refused
    routes: [{{provider: failing, model: status-401}}]
  - name: invalid
    routes: [{{provider: failing, model: status-400}}]
keys:
  - {{name: t, secret: "{gateway_key}"}}
"""
        env = {"ISTHMUS_LOG_FORMAT": "json", "ISTHMUS_LOG_LEVEL": "debug"}
        gw = GatewayProcess(_write(tmp_path, config), tmp_path / "gw", env=env)
        with gw:
            bearer = {"authorization": f"Bearer {gateway_key}"}
            url = f"{gw.url}/v1/chat/completions"
            assert httpx.post(url, json=_chat_body("fine", stream=False), headers=bearer).status_code == 200
            assert httpx.post(url, json=_chat_body("fine"), headers=bearer).status_code == 200
            gemini = f"{gw.url}/v1beta/models/fine:generateContent?key={gateway_key}"
            assert httpx.post(gemini, json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200
            answers = [
                httpx.post(url, json=_chat_body(model, stream=stream), headers=bearer)
                for model in ("broken", "refused", "invalid")
                for stream in (False, True)
            ]
            assert [a.status_code for a in answers] == [502, 502, 502, 502, 400, 400]
            wrong = httpx.post(url, json=_chat_body("fine"), headers={"x-api-key": gateway_key + "x"})
            assert wrong.status_code == 401
        assert gw.wait(timeout=20) == 0, gw.output()
    assert len(upstream.requests) == 6
    stdout, stderr = gw.stdout(), gw.stderr()
    for secret in (gateway_key, provider_secret):
        assert secret not in stdout and secret not in stderr
    assert "shown once" not in stdout  # every secret was fixed in the config: nothing to announce
    entries = list(_json_lines(stderr))
    assert entries, "debug logging produced no lines at all"
    assert "debug" in {e["level"] for e in entries}

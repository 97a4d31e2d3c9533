"""The measurements: answer checks, load runs (RPS and CPU per request) and paced latency runs,
alternating between targets round by round so that drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import client, procs
from harness.payloads import check_answer, request_body
from harness.servers import BENCH_DIR, CLIENT_KEY, Lab

_SERVER_TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


@dataclass(frozen=True)
class Target:
    name: str
    server: str
    path: Callable[[str], str]
    model: Callable[[str], str]
    may_fail: bool = False  # reported as failing instead of stopping the run


def _by_mode_path(mode: str) -> str:
    return f"/{mode}/v1/chat/completions"


def _gateway_path(mode: str) -> str:
    return "/v1/chat/completions"


def _bench_model(mode: str) -> str:
    return f"bench-{mode}"


def _conv_model(mode: str) -> str:
    return f"conv-{mode}"


TARGETS: dict[str, Target] = {
    "direct": Target("direct", "upstream", _by_mode_path, _bench_model),
    "nginx": Target("nginx", "nginx", _by_mode_path, _bench_model),
    "litellm": Target("litellm", "litellm", _gateway_path, _bench_model),
    "passthrough": Target("passthrough", "passthrough", _by_mode_path, _bench_model),
    # The same passthrough on another ASGI server or HTTP client (opt-in: --targets).
    "passthrough-granian": Target("passthrough-granian", "passthrough-granian", _by_mode_path, _bench_model),
    "passthrough-httpx": Target("passthrough-httpx", "passthrough-httpx", _by_mode_path, _bench_model),
    "isthmus": Target("isthmus", "isthmus", _gateway_path, _bench_model),
    "isthmus-convert": Target("isthmus-convert", "isthmus", _gateway_path, _conv_model, may_fail=True),
}


@dataclass
class Plan:
    rounds: int
    load_seconds: int
    connections: int
    paced_count: int
    paced_rate: float
    warmup_seconds: int
    use_wrk: bool = True  # False: the Python closed loop (also the fallback when wrk is missing)


@dataclass
class RoundFigures:
    rps: float
    cpu_us: float
    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    gateway_ms: float | None  # median of the server-timing "gateway" figure, when the target sends one


@dataclass
class Scenario:
    target: Target
    mode: str
    port: int
    raw: bytes
    body_file: Path
    status: str = "pending"  # ok | failed: … | skipped: …
    rounds: list[RoundFigures] = field(default_factory=list)
    settle_s: float = 0.0  # how long the target stayed busy after the last load run

    @property
    def key(self) -> str:
        return f"{self.target.name}:{self.mode}"

    @property
    def path(self) -> str:
        return self.target.path(self.mode)


def build_scenarios(lab: Lab, names: list[str]) -> list[Scenario]:
    out = []
    for name in names:
        target = TARGETS[name]
        server = lab.servers.get(target.server)
        for mode in ("unary", "stream"):
            if server is None:
                continue
            body = request_body(mode, target.model(mode))
            body_file = lab.workdir / f"body-{name}-{mode}.json"
            body_file.write_bytes(body)
            raw = client.build_request(server.port, target.path(mode), CLIENT_KEY, body)
            out.append(Scenario(target, mode, server.port, raw, body_file))
    return out


def check(scenarios: list[Scenario], log: Callable[[str], None]) -> None:
    """Each target must hand back the right answer before it is timed (fast errors look fast)."""
    for scen in scenarios:
        try:
            timing = asyncio.run(client.fetch(scen.port, scen.raw))
            verdict = check_answer(scen.mode, timing.status, timing.body)
            scen.status = "ok" if verdict.ok else f"failed: {verdict.detail}"
        except (OSError, TimeoutError) as exc:
            scen.status = f"failed: {type(exc).__name__}: {exc}"
        if scen.status != "ok" and not scen.target.may_fail:
            raise RuntimeError(f"{scen.key} gives a wrong answer: {scen.status}")
        log(f"  check {scen.key:<24} {scen.status[:150]}")


# --- load: RPS and CPU per request ------------------------------------------------------------


def _wrk(url: str, body_file: Path, connections: int, seconds: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    assert wrk is not None
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH_DIR / "wrk" / "post.lua"),
        url,
    ]
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_KEY": CLIENT_KEY, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return result
    raise RuntimeError(
        f"wrk printed no summary (exit {done.returncode}): {done.stdout[-500:]}{done.stderr[-500:]}"
    )


def settle(proc: procs.Proc, limit_s: float = 30.0, step_s: float = 0.25, idle_share: float = 0.02) -> float:
    """Wait until the target's process tree is idle (under ``idle_share`` of a core over ``step_s``);
    returns the seconds waited. Work a target defers past the last answer (Isthmus writes usage
    records in the background) is still part of what those requests cost."""
    started = time.monotonic()
    last = proc.cpu_seconds()
    while time.monotonic() - started < limit_s:
        time.sleep(step_s)
        now = proc.cpu_seconds()
        if now - last < step_s * idle_share:
            break
        last = now
    return time.monotonic() - started


def load_once(lab: Lab, scen: Scenario, plan: Plan, seconds: int) -> tuple[float, float, int, int]:
    """(RPS, CPU µs per request of the target's process tree, requests, errors).

    The CPU is read once the target has gone idle again, so deferred work counts; the settle time is
    logged."""
    proc = lab.servers[scen.target.server].proc
    url = f"http://127.0.0.1:{scen.port}{scen.path}"
    cpu_before = proc.cpu_seconds()
    connections = plan.connections
    if plan.use_wrk and shutil.which("wrk"):
        summary = _wrk(url, scen.body_file, connections, seconds)
        scen.settle_s = settle(proc)
        cpu_after = proc.cpu_seconds()
        requests = int(summary["requests"])
        elapsed = summary["duration_us"] / 1e6
        errors = sum(
            int(summary[k])
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
    else:
        result = asyncio.run(client.closed_loop(scen.port, scen.raw, connections, seconds))
        scen.settle_s = settle(proc)
        cpu_after = proc.cpu_seconds()
        requests, elapsed, errors = result.requests, result.seconds, result.errors + result.non_2xx
    cpu_us = (cpu_after - cpu_before) * 1e6 / requests if requests else float("nan")
    return requests / elapsed if elapsed else 0.0, cpu_us, requests, errors


# --- paced: added latency at low load ----------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def paced_once(
    scen: Scenario, count: int, rate: float
) -> tuple[float, float, float, float, float | None, int]:
    timings = asyncio.run(client.paced(scen.port, scen.raw, count, rate))
    totals = [t.total_s * 1000 for t in timings]
    firsts = [t.first_body_s * 1000 for t in timings]
    bad = sum(1 for t in timings if t.status != 200)
    gateway = [
        float(m.group(2))
        for t in timings
        for m in _SERVER_TIMING.finditer(t.server_timing)
        if m.group(1) == "gateway"
    ]
    return (
        _pct(totals, 0.5),
        _pct(totals, 0.99),
        _pct(firsts, 0.5),
        _pct(firsts, 0.99),
        statistics.median(gateway) if gateway else None,
        bad,
    )


def run_rounds(lab: Lab, scenarios: list[Scenario], plan: Plan, log: Callable[[str], None]) -> None:
    live = [s for s in scenarios if s.status == "ok"]
    if plan.warmup_seconds:
        log(f"warm-up: {plan.warmup_seconds}s of load per scenario")
        for scen in live:
            load_once(lab, scen, plan, plan.warmup_seconds)
    for rnd in range(plan.rounds):
        # Rotate the order each round so no target always runs right after the same neighbour.
        shift = rnd % len(live) if live else 0
        order = live[shift:] + live[:shift]
        started = time.monotonic()
        for scen in order:
            rps, cpu_us, requests, errors = load_once(lab, scen, plan, plan.load_seconds)
            p50, p99, f50, f99, gateway, bad = paced_once(scen, plan.paced_count, plan.paced_rate)
            scen.rounds.append(RoundFigures(rps, cpu_us, requests, errors + bad, p50, p99, f50, f99, gateway))
            log(
                f"  round {rnd + 1}/{plan.rounds} {scen.key:<24} {rps:8.0f} rps {cpu_us:9.0f} µs/req  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors + bad}  settled {scen.settle_s:.1f}s"
            )
        log(f"round {rnd + 1} took {time.monotonic() - started:.0f}s")

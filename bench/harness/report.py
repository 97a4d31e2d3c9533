"""Medians across rounds, latency paired per round against the direct target, goals, and the
markdown + JSON written to ``bench/results/``."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.measure import RoundFigures, Scenario
from harness.servers import BENCH_DIR, LITELLM_VENV, nginx_binary

REPO = BENCH_DIR.parent


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def _spread(values: list[float]) -> float | None:
    """(max − min) / median across rounds, in percent: the noise figure quoted with each result."""
    clean = [v for v in values if not math.isnan(v)]
    if len(clean) < 2:
        return None
    mid = statistics.median(clean)
    return 100 * (max(clean) - min(clean)) / mid if mid else None


def _paired(scen: Scenario, base: Scenario | None, pick: Callable[[RoundFigures], float]) -> float | None:
    if base is None or not scen.rounds or len(base.rounds) != len(scen.rounds):
        return None
    return _median([pick(a) - pick(b) for a, b in zip(scen.rounds, base.rounds, strict=True)])


def _ratio(num: Scenario | None, den: Scenario | None) -> float | None:
    """Median of per-round CPU ratios (pairs taken in the same round, so drift cancels)."""
    if num is None or den is None or not num.rounds or len(num.rounds) != len(den.rounds):
        return None
    return _median([a.cpu_us / b.cpu_us for a, b in zip(num.rounds, den.rounds, strict=True) if b.cpu_us])


def summarise(scenarios: list[Scenario], memory: dict[str, tuple[float, float]]) -> dict[str, Any]:
    by_key = {s.key: s for s in scenarios}
    rows: list[dict[str, Any]] = []
    for scen in scenarios:
        base = by_key.get(f"direct:{scen.mode}") if scen.target.name != "direct" else None
        base = base if base is not None and base.rounds else None
        r = scen.rounds
        row: dict[str, Any] = {
            "target": scen.target.name,
            "mode": scen.mode,
            "status": scen.status,
            "rounds": len(r),
            "rps": _median([x.rps for x in r]),
            "rps_spread_pct": _spread([x.rps for x in r]),
            "cpu_us_per_request": _median([x.cpu_us for x in r]),
            "cpu_spread_pct": _spread([x.cpu_us for x in r]),
            "requests": sum(x.requests for x in r),
            "errors": sum(x.errors for x in r),
            "latency_p50_ms": _median([x.latency_p50_ms for x in r]),
            "latency_p99_ms": _median([x.latency_p99_ms for x in r]),
            "ttfb_p50_ms": _median([x.ttfb_p50_ms for x in r]),
            "added_p50_ms": _paired(scen, base, lambda x: x.latency_p50_ms),
            "added_p99_ms": _paired(scen, base, lambda x: x.latency_p99_ms),
            "added_ttfb_p50_ms": _paired(scen, base, lambda x: x.ttfb_p50_ms)
            if scen.mode == "stream"
            else None,
            "server_timing_gateway_ms": _median([x.gateway_ms for x in r if x.gateway_ms is not None]),
            "rss_mib": memory.get(scen.target.server, (None, None))[0],
            "peak_rss_mib": memory.get(scen.target.server, (None, None))[1],
            "per_round": [vars(x) for x in r],
        }
        rows.append(row)
    return {"rows": rows, "goals": _goals(by_key, rows)}


# How far apart two paced p50 figures of the same target land from round to round on this machine.
_TIMING_NOISE_MS = 0.3


def _goals(by_key: dict[str, Scenario], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 8's targets, each with the figure reached (None when a target did not run)."""
    row = {(r["target"], r["mode"]): r for r in rows}
    goals: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool = False) -> None:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        goals.append({"goal": name, "value": value, "limit": limit, "met": met})

    for mode in ("unary", "stream"):
        isthmus = by_key.get(f"isthmus:{mode}")
        add(
            f"{mode}: Isthmus CPU/request ÷ bare passthrough (≤ 1.2)",
            _ratio(isthmus, by_key.get(f"passthrough:{mode}")),
            1.2,
        )
        add(
            f"{mode}: LiteLLM CPU/request ÷ Isthmus (≥ 50)",
            _ratio(by_key.get(f"litellm:{mode}"), isthmus),
            50,
            True,
        )
        convert = by_key.get(f"isthmus-convert:{mode}")
        add(
            f"{mode}: conversion route CPU ÷ passthrough route (≤ 2)",
            _ratio(convert, isthmus) if convert and convert.status == "ok" else None,
            2,
        )
        r = row.get(("isthmus", mode), {})
        add(f"{mode}: Isthmus added latency p50 ms (≤ 1)", r.get("added_p50_ms"), 1.0)
        add(f"{mode}: Isthmus added latency p99 ms (≤ 3)", r.get("added_p99_ms"), 3.0)
        # server-timing sees the gateway's own work, not the HTTP server and client it runs on: set
        # it against what Isthmus adds on top of the bare passthrough (same stack), paired per round.
        own = (
            _paired(isthmus, by_key.get(f"passthrough:{mode}"), lambda x: x.latency_p50_ms)
            if isthmus
            else None
        )
        timing = r.get("server_timing_gateway_ms")
        add(
            f"{mode}: |server-timing gateway − (Isthmus − passthrough) p50| ms (≤ {_TIMING_NOISE_MS})",
            abs(timing - own) if timing is not None and own is not None else None,
            _TIMING_NOISE_MS,
        )
    add(
        "stream: Isthmus added time to first byte p50 ms (≤ 1)",
        row.get(("isthmus", "stream"), {}).get("added_ttfb_p50_ms"),
        1.0,
    )
    add(
        "Isthmus RSS at the end of the run MiB (≤ 120)", row.get(("isthmus", "unary"), {}).get("rss_mib"), 120
    )
    add(
        "Isthmus peak RSS MiB, start-up included (≤ 120)",
        row.get(("isthmus", "unary"), {}).get("peak_rss_mib"),
        120,
    )
    return goals


# --- environment ---------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def environment(isthmus_ref: str | None = None) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    nginx = nginx_binary()
    wrk = shutil.which("wrk")
    litellm_py = LITELLM_VENV / "bin" / "python"
    litellm = (
        _run([str(litellm_py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        if litellm_py.exists()
        else None
    )
    commit = _run(["git", "-C", str(REPO), "rev-parse", "--short", isthmus_ref or "HEAD"])
    dirty = isthmus_ref is None and bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"]))
    return {
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_at_start": list(os.getloadavg()),
        },
        "versions": {
            "python": platform.python_version(),
            "isthmus": f"{commit}{' + uncommitted src changes' if dirty else ''}",
            **{name: version(name) for name in ("uvicorn", "uvloop", "httptools", "aiohttp", "orjson")},
            "litellm": litellm,
            "nginx": _run([nginx, "-v"]).rpartition("nginx/")[2] or None if nginx else None,
            "wrk": _second_word(_run([wrk, "-v"])) if wrk else None,
        },
    }


def _second_word(text: str) -> str | None:
    words = text.split()
    return words[1] if len(words) > 1 else None


# --- output -----------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def markdown(result: dict[str, Any]) -> str:
    env, plan, summary = result["environment"], result["plan"], result["summary"]
    machine = env["machine"]
    load_start = ", ".join(f"{x:.2f}" for x in machine["loadavg_at_start"])
    load_end = ", ".join(f"{x:.2f}" for x in result["loadavg_at_end"])
    lines = [
        f"# Isthmus benchmark — {result['started_at']} ({result['mode']} run)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, kernel {machine['kernel']}; "
        f"{result['pinning']}; load average at start {load_start}, at end {load_end}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + ".  ",
        f"Fake upstream: {result['upstream']}. Load: {result['load_tool']}, {plan['connections']} "
        f"connections for {plan['load_seconds']}s per scenario per round; latency: "
        f"{plan['paced_count']} requests paced at {plan['paced_rate']:g}/s on one keep-alive connection; "
        f"{plan['rounds']} round(s) in alternation, medians shown.",
        "",
        "| target | mode | RPS | CPU µs/req | CPU noise | added p50 ms | added p99 ms | added TTFB p50 ms "
        "| server-timing gateway ms | RSS MiB (peak) | errors | status |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in summary["rows"]:
        added = row["target"] != "direct"
        lines.append(
            f"| {row['target']} | {row['mode']} | {_fmt(row['rps'])} | {_fmt(row['cpu_us_per_request'])} "
            f"| {_fmt(row['cpu_spread_pct'], 0, '%')} "
            f"| {_fmt(row['added_p50_ms'], 2) if added else _fmt(row['latency_p50_ms'], 2) + ' (abs)'} "
            f"| {_fmt(row['added_p99_ms'], 2) if added else _fmt(row['latency_p99_ms'], 2) + ' (abs)'} "
            f"| {_fmt(row['added_ttfb_p50_ms'], 2)} | {_fmt(row['server_timing_gateway_ms'], 2)} "
            f"| {_fmt(row['rss_mib'])} ({_fmt(row['peak_rss_mib'])}) | {row['errors']} "
            f"| {row['status'][:80]} |"
        )
    lines += [
        "",
        "CPU noise = (max − min) / median of CPU µs/request across rounds. Direct's latency is "
        "absolute; every other target's is its figure minus direct's in the same round (median of the "
        "per-round differences).",
        "",
        "## Goals (issue 8)",
        "",
        "| goal | reached | met |",
        "|---|--:|---|",
    ]
    for goal in summary["goals"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[goal["met"]]
        lines.append(f"| {goal['goal']} | {_fmt(goal['value'], 2)} | {met} |")
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(markdown(result))
    for src, name in ((json_path, "latest.json"), (md_path, "latest.md")):
        (out_dir / name).write_text(src.read_text())
    return json_path, md_path

"""Benchmark Isthmus against a fake upstream, nginx, LiteLLM and a bare Python passthrough.

    .venv/bin/python bench/run.py            # full run (≈ 8 minutes), what `make bench` does
    .venv/bin/python bench/run.py --quick    # ≈ 1–2 minutes
    .venv/bin/python bench/run.py --smoke    # seconds; what `make test` checks (no LiteLLM)
    .venv/bin/python bench/run.py --soak 600 # 10 minutes of mixed traffic on Isthmus, RSS sampled

Results go to bench/results/ as markdown and JSON (latest.md / latest.json are the newest run).
See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import procs, report
from harness.measure import TARGETS, Plan, build_scenarios, check, run_rounds
from harness.payloads import request_body
from harness.servers import BENCH_DIR, CLIENT_KEY, Lab

PLANS = {
    "full": Plan(rounds=4, load_seconds=4, connections=32, paced_count=100, paced_rate=25, warmup_seconds=2),
    "quick": Plan(rounds=2, load_seconds=2, connections=32, paced_count=40, paced_rate=40, warmup_seconds=1),
    "smoke": Plan(rounds=1, load_seconds=1, connections=4, paced_count=10, paced_rate=100, warmup_seconds=0),
}
ALL_TARGETS = ["direct", "nginx", "litellm", "passthrough", "isthmus", "isthmus-convert"]
SMOKE_TARGETS = ["direct", "nginx", "passthrough", "isthmus", "isthmus-convert"]


def log(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def lab_session(args: argparse.Namespace) -> Iterator[Lab]:
    pinning = procs.Pinning.for_machine(enabled=not args.no_pin)
    if pinning.load is not None:
        os.sched_setaffinity(
            0, pinning.load
        )  # this process is the paced client: keep it off the target's core
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    lab = Lab(workdir, pinning)
    try:
        yield lab
    finally:
        lab.stop_all()
        if args.keep_workdir:
            log(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def start_targets(lab: Lab, names: list[str], prefer_nginx: bool, isthmus_ref: str | None = None) -> str:
    upstream = lab.start_upstream(prefer_nginx=prefer_nginx)
    log(f"fake upstream: {upstream} on {lab.upstream_url}")
    starters: dict[str, Callable[[], object]] = {
        "nginx": lab.start_nginx_proxy,
        "litellm": lab.start_litellm,
        "passthrough": lab.start_passthrough,
        "passthrough-granian": lambda: lab.start_passthrough(server="granian"),
        "passthrough-httpx": lambda: lab.start_passthrough(client="httpx"),
        "isthmus": lambda: lab.start_isthmus(ref=isthmus_ref),
    }
    for name in names:
        server = TARGETS[name].server
        if server in lab.servers or server in lab.skipped or server not in starters:
            continue
        log(f"starting {server} …")
        started = time.monotonic()
        starters[server]()
        if server in lab.servers:
            log(f"  {server} listening on {lab.servers[server].port} after {time.monotonic() - started:.1f}s")
        else:
            log(f"  skipped: {lab.skipped[server]}")
    return upstream


def bench(args: argparse.Namespace) -> dict[str, Any]:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = dataclasses.replace(PLANS[mode])
    if args.rounds:
        plan.rounds = args.rounds
    if args.connections:
        plan.connections = args.connections
    plan.use_wrk = not args.python_load and shutil.which("wrk") is not None
    names = args.targets.split(",") if args.targets else (SMOKE_TARGETS if args.smoke else ALL_TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    if "direct" not in names:
        names.insert(0, "direct")
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    env = report.environment(args.isthmus_ref)
    clock = time.monotonic()
    with lab_session(args) as lab:
        upstream = start_targets(lab, names, not args.python_upstream, args.isthmus_ref)
        scenarios = build_scenarios(lab, names)
        log("checking answers:")
        check(scenarios, log)
        run_rounds(lab, scenarios, plan, log)
        memory = {name: server.proc.memory() for name, server in lab.servers.items()}
        skipped = dict(lab.skipped)
        pinning = lab.pinning.describe()
    result = {
        "mode": mode,
        "started_at": started_at,
        "command": shlex.join(["bench/run.py", *sys.argv[1:]]),
        "environment": env,
        "pinning": pinning,
        "upstream": upstream,
        "load_tool": "wrk -t1" if plan.use_wrk else "Python closed loop (not wrk)",
        "plan": vars(plan),
        "skipped": skipped,
        "elapsed_s": round(time.monotonic() - clock, 1),
        "loadavg_at_end": list(os.getloadavg()),
        "summary": report.summarise(scenarios, memory),
    }
    json_path, md_path = report.write(result, Path(args.out), f"bench-{started_at}")
    log("")
    log(md_path.read_text())
    log(f"written: {md_path} and {json_path} ({result['elapsed_s']}s)")
    return result


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Mixed streamed and non-streamed traffic against Isthmus for ``args.soak`` seconds, RSS sampled."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the soak needs wrk: make bench-deps (apt-get install wrk nginx)")
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    connections = args.connections or 16
    with lab_session(args) as lab:
        upstream = start_targets(lab, ["direct", "isthmus"], not args.python_upstream, args.isthmus_ref)
        scenarios = build_scenarios(lab, ["isthmus"])
        check(scenarios, log)
        isthmus = lab.servers["isthmus"]
        files = {}
        for mode in ("unary", "stream"):
            files[mode] = lab.workdir / f"soak-{mode}.json"
            files[mode].write_bytes(request_body(mode, f"bench-{mode}"))
        env = {
            "BENCH_KEY": CLIENT_KEY,
            "BENCH_UNARY_FILE": str(files["unary"]),
            "BENCH_STREAM_FILE": str(files["stream"]),
            "PATH": "/usr/bin:/bin",
        }
        url = f"http://127.0.0.1:{isthmus.port}/v1/chat/completions"
        script = str(BENCH_DIR / "wrk" / "mixed.lua")

        def run_wrk(seconds: int) -> subprocess.Popen[str]:
            cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script, url]
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

        warm = min(30, max(5, args.soak // 20))
        log(f"warm-up {warm}s …")
        run_wrk(warm).wait()
        baseline = isthmus.proc.memory()[0]
        cpu_before = isthmus.proc.cpu_seconds()
        samples: list[tuple[float, float]] = [(0.0, baseline)]
        log(f"soak {args.soak}s with {connections} connections; RSS at start {baseline:.1f} MiB")
        began = time.monotonic()
        load = run_wrk(args.soak)
        while load.poll() is None:
            time.sleep(args.sample_every)
            rss = isthmus.proc.memory()[0]
            samples.append((round(time.monotonic() - began, 1), rss))
            log(f"  t={samples[-1][0]:6.0f}s  RSS {rss:7.1f} MiB")
        out = load.stdout.read() if load.stdout else ""
        summary: dict[str, Any] = next(
            (json.loads(x[11:]) for x in out.splitlines() if x.startswith("BENCH_JSON ")), {}
        )
        cpu = isthmus.proc.cpu_seconds() - cpu_before
        final, peak = isthmus.proc.memory()
    requests = int(summary.get("requests", 0))
    # Growth over the last quarter vs the first quarter is less sensitive to one noisy sample.
    quarter = max(1, len(samples) // 4)
    first_q = sum(r for _, r in samples[:quarter]) / quarter
    # The start baseline is idle, the end is under load (queues, buffers in flight): also compare
    # the first and last samples taken under load, like with like.
    under_load = samples[1:] or samples
    load_first, load_last = under_load[0][1], under_load[-1][1]
    last_q = sum(r for _, r in samples[-quarter:]) / quarter
    result = {
        "mode": "soak",
        "started_at": started_at,
        "command": shlex.join(["bench/run.py", *sys.argv[1:]]),
        "environment": report.environment(args.isthmus_ref),
        "upstream": upstream,
        "seconds": args.soak,
        "connections": connections,
        "wrk": summary,
        "requests": requests,
        "rps": requests / args.soak if args.soak else None,
        "cpu_us_per_request": cpu * 1e6 / requests if requests else None,
        "rss_start_mib": baseline,
        "rss_end_mib": final,
        "peak_rss_mib": peak,
        "growth_pct": 100 * (final - baseline) / baseline if baseline else None,
        "growth_quarters_pct": 100 * (last_q - first_q) / first_q if first_q else None,
        "growth_under_load_pct": 100 * (load_last - load_first) / load_first if load_first else None,
        "samples": samples,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"soak-{started_at}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(
        f"soak: {requests} requests ({result['rps'] or 0:.0f}/s), errors "
        f"{sum(int(v) for k, v in summary.items() if k.endswith(('errors', 'timeouts')))}, "
        f"CPU {result['cpu_us_per_request'] or 0:.0f} µs/req, RSS {baseline:.1f} → {final:.1f} MiB "
        f"({result['growth_pct'] or 0:+.1f}%; first vs last sample under load "
        f"{result['growth_under_load_pct'] or 0:+.1f}%; last vs first quarter "
        f"{result['growth_quarters_pct'] or 0:+.1f}%), "
        f"peak {peak:.1f} MiB — written {path}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short run (≈ 1–2 minutes)")
    size.add_argument("--smoke", action="store_true", help="seconds; skips LiteLLM; for `make test`")
    size.add_argument("--soak", type=int, metavar="SECONDS", help="soak Isthmus with mixed traffic")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--connections", type=int, help="override wrk's connection count")
    parser.add_argument("--sample-every", type=float, default=5.0, help="soak: seconds between RSS samples")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"), help="where results are written")
    parser.add_argument("--no-pin", action="store_true", help="do not pin target and load to separate cores")
    parser.add_argument(
        "--python-upstream", action="store_true", help="use the Python fake upstream, not nginx"
    )
    parser.add_argument("--python-load", action="store_true", help="use the Python closed loop, not wrk")
    parser.add_argument("--isthmus-ref", help="bench this git revision of src/ (default: the working tree)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch dir (configs, logs)")
    args = parser.parse_args()
    if args.isthmus_ref:
        # Pin the revision once: the branch may move while the run goes on.
        args.isthmus_ref = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--verify", f"{args.isthmus_ref}^{{commit}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    if args.soak:
        soak(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()

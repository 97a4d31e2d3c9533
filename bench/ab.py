"""CPU per request of two (or more) revisions of Isthmus, measured side by side in alternation.

    .venv/bin/python bench/ab.py 687f363 HEAD                  # unary, 20 rounds of 2 s each
    .venv/bin/python bench/ab.py 687f363 - --mode stream       # "-" is the working tree
    .venv/bin/python bench/ab.py HEAD HEAD+no-writer HEAD+no-accounting   # parts switched off

``REV+VARIANT`` runs that revision with parts of the request path switched off (the variants, listed
by ``--variants``, are in ``harness/variants.py``), which is how the costs of accounting and of the
usage writer were measured.

On a shared machine the CPU a request costs drifts by tens of percent from one minute to the next,
so two `run.py` runs one after the other cannot tell a 5 % change. Here every revision runs at once
(each with its own fake upstream, all pinned like `run.py`'s targets) and the load alternates between
them in short rounds, the order reversed every round; each round's figure is compared with the first
revision's in the same round, and the median of those paired ratios is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import procs
from harness.measure import TARGETS, build_scenarios, check
from harness.servers import BENCH_DIR, CLIENT_KEY, Lab
from harness.variants import VARIANTS


def process_cpu_us(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "refs",
        nargs="*",
        help="git revisions; '-' for the working tree; REV+VARIANT switches parts off; the first is the base",
    )
    parser.add_argument("--variants", action="store_true", help="list the variants and exit")
    parser.add_argument("--mode", choices=["unary", "stream"], default="unary")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=2, help="load per revision per round")
    args = parser.parse_args()
    if args.variants or not args.refs:
        for name, (what, _) in VARIANTS.items():
            print(f"{name:14s} {what}")
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("needs wrk: make bench-deps")
    pinning = procs.Pinning.for_machine()
    if pinning.load is not None:
        os.sched_setaffinity(0, pinning.load)
    cmd = [wrk, "-t1", "-c32", "--timeout", "10s", "-s", str(BENCH_DIR / "wrk" / "post.lua")]
    labs: list[Lab] = []
    targets: list[tuple[str, int, str, dict[str, str]]] = []  # revision, PID, URL, wrk's environment
    try:
        for ref in args.refs:
            lab = Lab(Path(tempfile.mkdtemp(prefix="isthmus-ab-")), pinning)
            labs.append(lab)
            lab.start_upstream()
            rev, _, variant = ref.partition("+")
            lab.start_isthmus(ref=None if rev == "-" else rev, variant=variant or None)
            scenario = next(s for s in build_scenarios(lab, ["isthmus"]) if s.mode == args.mode)
            check([scenario], print)
            pid = lab.servers[TARGETS["isthmus"].server].proc.pid
            url = f"http://127.0.0.1:{scenario.port}{scenario.path}"
            env = {"BENCH_BODY_FILE": str(scenario.body_file), "BENCH_KEY": CLIENT_KEY}
            targets.append((ref, pid, url, {**env, "PATH": "/usr/bin:/bin"}))
        for _, _, url, env in targets:  # warm-up
            subprocess.run([*cmd, "-d3s", url], env=env, capture_output=True, check=False)
        figures: dict[str, list[float]] = {ref: [] for ref in args.refs}
        for number in range(args.rounds):
            for ref, pid, url, env in targets if number % 2 == 0 else targets[::-1]:
                time.sleep(0.3)
                before = process_cpu_us(pid)
                out = subprocess.run(
                    [*cmd, f"-d{args.seconds}s", url], env=env, capture_output=True, text=True, check=False
                ).stdout
                time.sleep(0.8)  # the usage writer's deferred work is part of the request's cost
                requests = int(json.loads(out.strip().splitlines()[-1].split(" ", 1)[1])["requests"])
                figures[ref].append((process_cpu_us(pid) - before) / requests)
            line = "  ".join(f"{ref} {figures[ref][-1]:.0f}" for ref in args.refs)
            print(f"round {number + 1}: {line}", flush=True)
    finally:
        for lab in labs:
            lab.stop_all()
            shutil.rmtree(lab.workdir, ignore_errors=True)
    base = args.refs[0]
    print(f"\n{args.mode}, CPU µs/request, {args.rounds} rounds of {args.seconds} s (wrk -c32):")
    for ref in args.refs:
        ratios = [x / y for x, y in zip(figures[ref], figures[base], strict=True)]
        print(
            f"  {ref}: median {statistics.median(figures[ref]):.0f}; paired ratio to {base}: "
            f"median {statistics.median(ratios):.3f} (range {min(ratios):.2f}–{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()

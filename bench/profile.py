"""Profile Isthmus (or the bare passthrough) under wrk load, with py-spy or pyinstrument.

    .venv/bin/python bench/profile.py                          # py-spy, Isthmus, non-streamed, 20 s
    .venv/bin/python bench/profile.py --mode stream --seconds 30
    .venv/bin/python bench/profile.py --target passthrough     # the floor, for comparison
    .venv/bin/python bench/profile.py --tool pyinstrument      # the whole server run under pyinstrument

py-spy samples the running server from outside (no restart, little overhead) and writes collapsed
stacks (``*.folded``: load them into speedscope or flamegraph.pl) plus a table of the functions with
the largest self and inclusive shares of the samples (``*.md``). Only the thread holding the GIL is
sampled (``--gil``): py-spy otherwise counts threads blocked in C (aiosqlite's idle worker) as busy.
pyinstrument runs the server under its own profiler and writes its text tree when the server stops.
tracemalloc (``--tool tracemalloc``) reports what the heap gained over the load, by line and call stack.
Output goes to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import procs
from harness.measure import TARGETS, build_scenarios, check
from harness.servers import BENCH_DIR, CLIENT_KEY, Lab


def _short(frame: str) -> tuple[str, str]:
    """``func (/full/path/pkg/mod.py:123)`` → (``func (pkg/mod.py)``, package) — lines merged."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "/site-packages/" in path:
        rel = path.split("/site-packages/", 1)[1]
        package = rel.split("/", 1)[0].removesuffix(".py")
    elif "/src/isthmus/" in path:
        rel = "isthmus/" + path.split("/src/isthmus/", 1)[1]
        package = "isthmus"
    elif "/lib/python3" in path:
        rel = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        package = "stdlib:" + rel.split("/", 1)[0].removesuffix(".py")
    else:
        rel, package = path.rsplit("/", 1)[-1], "other"
    return f"{name} ({rel})", package


def top_functions(folded: str, limit: int) -> tuple[int, dict[str, list[tuple[str, int]]]]:
    """Tables from py-spy's collapsed stacks (``a;b;c COUNT``): self and inclusive time per function
    (line numbers merged) and self time per package."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1][0]] += count
        packages[frames[-1][1]] += count
        for name in {f[0] for f in frames}:
            incl_counts[name] += count
    # Frames on every stack (the CLI, uvicorn's loop runner) say nothing: leave them out.
    trunk = {name for name, n in incl_counts.items() if n >= 0.99 * total}
    inclusive = [(name, n) for name, n in incl_counts.most_common() if name not in trunk][:limit]
    own = [(name, n) for name, n in incl_counts.most_common() if name not in trunk and "(isthmus/" in name]
    return total, {
        "Self time by package": packages.most_common(),
        "Self time by function (where the CPU is spent)": self_counts.most_common(limit),
        "Inclusive time by function (the function and everything it calls)": inclusive,
        "Inclusive time of Isthmus's own functions": own[:limit],
    }


def _table(title: str, rows: list[tuple[str, int]], total: int) -> list[str]:
    out = [f"## {title}", "", "| share | samples | where |", "|--:|--:|---|"]
    out += [f"| {100 * n / total:.1f}% | {n} | `{frame}` |" for frame, n in rows]
    return [*out, ""]


def memory_growth(
    pid: int, wrk_cmd: list[str], env: dict[str, str], seconds: int, snaps: Path, stem: Path, top: int
) -> None:
    """What the heap gained over ``seconds`` of load, by line and by allocating call stack."""

    def load(duration: int) -> str:
        cmd = [*wrk_cmd[:-1], f"-d{duration}s", wrk_cmd[-1]]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False).stdout
        return out.strip().splitlines()[-1] if out.strip() else ""

    def snapshot(name: str) -> tracemalloc.Snapshot:
        os.kill(pid, signal.SIGUSR1)
        path = snaps / name
        for _ in range(600):
            time.sleep(0.1)
            if path.exists():
                time.sleep(0.5)  # let the dump finish
                return tracemalloc.Snapshot.load(str(path))
        raise RuntimeError(f"no {name} from the server")

    os.kill(pid, signal.SIGUSR1)  # start tracing
    load(3)
    before = snapshot("snap1.pickle")
    summary = load(seconds)
    after = snapshot("snap2.pickle")
    requests = int(json.loads(summary.split(" ", 1)[1])["requests"]) if summary else 0
    by_line = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in by_line)
    lines = [
        f"# tracemalloc: heap growth over {seconds}s of load ({requests} requests)",
        "",
        f"Net growth {total / 1024:.0f} KiB"
        + (f", {total / requests:.0f} B per request" if requests else "")
        + " (after gc.collect(), traced from after start-up).",
        "",
        "## By line",
        "",
        "| growth KiB | objects | line |",
        "|--:|--:|---|",
        *(f"| {s.size_diff / 1024:.1f} | {s.count_diff} | `{s.traceback[0]}` |" for s in by_line[:top]),
        "",
        "## Largest growth by call stack",
        "",
    ]
    for stat in after.compare_to(before, "traceback")[:3]:
        lines += [f"{stat.size_diff / 1024:.1f} KiB, {stat.count_diff} objects:", "```"]
        lines += [*stat.traceback.format()[-14:], "```", ""]
    Path(f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {stem}.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["isthmus", "isthmus-convert", "passthrough"], default="isthmus")
    parser.add_argument("--mode", choices=["unary", "stream"], default="unary")
    parser.add_argument("--tool", choices=["py-spy", "pyinstrument", "tracemalloc"], default="py-spy")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=str(BENCH_DIR / "results"))
    parser.add_argument("--isthmus-ref", help="profile this git revision of src/ (default: the working tree)")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    py_spy = Path(sys.executable).parent / "py-spy"
    if wrk is None:
        raise SystemExit("profiling needs wrk: make bench-deps")
    if args.tool == "py-spy" and not py_spy.exists():
        raise SystemExit("py-spy is a dev dependency: make sync-dev")
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"profile-{args.target}-{args.mode}-{args.tool}-{stamp}"

    pinning = procs.Pinning.for_machine()
    if pinning.load is not None:
        os.sched_setaffinity(0, pinning.load)
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-profile-"))
    lab = Lab(workdir, pinning)
    wrap: list[str] = []
    if args.tool == "pyinstrument":
        wrap = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", f"{stem}.txt", "-i", "0.0002"]
    elif args.tool == "tracemalloc":
        wrap = [sys.executable, str(BENCH_DIR / "harness" / "traced_server.py"), str(workdir)]
    try:
        lab.start_upstream()
        if args.target.startswith("isthmus"):
            lab.start_isthmus(wrap=wrap, ref=args.isthmus_ref)
        else:
            lab.start_passthrough(wrap=wrap)
        scenarios = [s for s in build_scenarios(lab, [args.target]) if s.mode == args.mode]
        check(scenarios, print)
        scen = scenarios[0]
        server = lab.servers[TARGETS[args.target].server]
        url = f"http://127.0.0.1:{scen.port}{scen.path}"
        env = {"BENCH_BODY_FILE": str(scen.body_file), "BENCH_KEY": CLIENT_KEY, "PATH": "/usr/bin:/bin"}
        cmd = [
            wrk,
            "-t1",
            f"-c{args.connections}",
            "--timeout",
            "10s",
            "-s",
            str(BENCH_DIR / "wrk" / "post.lua"),
        ]
        subprocess.run([*cmd, "-d2s", url], env=env, capture_output=True, check=False)  # warm-up
        if args.tool == "tracemalloc":
            memory_growth(server.proc.pid, [*cmd, url], env, args.seconds, workdir, stem, args.top)
            return
        load = subprocess.Popen(
            [*cmd, f"-d{args.seconds + 3}s", url], env=env, stdout=subprocess.PIPE, text=True
        )
        time.sleep(1)
        pid = server.proc.pid
        print(f"profiling {args.target} ({args.mode}) pid {pid} for {args.seconds}s with {args.tool}")
        if args.tool == "py-spy":
            folded = Path(f"{stem}.folded")
            # --gil: only the thread running Python; --full-filenames: tell packages apart.
            spy = [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(args.seconds),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(folded),
                "--gil",
                "--full-filenames",
            ]
            subprocess.run(spy, check=True, capture_output=True)
        load.wait()
        print((load.stdout.read() if load.stdout else "").strip().splitlines()[-1])
    finally:
        lab.stop_all(timeout=120)  # pyinstrument renders its report on the way out
        shutil.rmtree(workdir, ignore_errors=True)
    if args.tool == "py-spy":
        total, tables = top_functions(folded.read_text(), args.top)
        lines = [
            f"# py-spy profile: {args.target}, {args.mode}, {args.seconds}s under wrk -c{args.connections}",
            "",
            f"{total} samples at {args.rate}/s of the thread holding the GIL (py-spy --gil: threads blocked "
            "in C, such as aiosqlite's worker waiting on its queue, and the event loop's poll are not "
            "counted, which is what CPU time is spent on in a one-threaded server).",
            "",
            *(line for title, rows in tables.items() for line in _table(title, rows, total)),
        ]
        Path(f"{stem}.md").write_text("\n".join(lines))
        print("\n".join(lines))
        print(f"written: {stem}.md and {folded}")
    else:
        print(f"written: {stem}.txt")


if __name__ == "__main__":
    main()

"""Processes under test: start pinned to a core, read their tree's CPU time and peak memory, stop them.

CPU is read from ``/proc/PID/stat`` (utime + stime) of the root process and every descendant, so a
target that forks workers (nginx's master and worker, LiteLLM) is charged in full.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Pinning:
    """Where the load (clients, fake upstream) and the target run; ``None`` = not pinned."""

    load: set[int] | None
    target: set[int] | None

    @staticmethod
    def for_machine(enabled: bool = True) -> Pinning:
        available = cores()
        if not enabled or len(available) < 2:
            return Pinning(None, None)
        return Pinning({available[0]}, {available[1]})

    def describe(self) -> str:
        if self.target is None:
            return "not pinned"
        load = sorted(self.load or ())
        return f"target on core {sorted(self.target)}, load generator and fake upstream on core {load}"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """utime + stime of every live process in the tree, in seconds."""
        total = 0
        for proc in self.tree():
            try:
                with open(f"/proc/{proc.pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / CLOCK_TICKS

    def memory(self) -> tuple[float, float]:
        """(current RSS, peak RSS a.k.a. VmHWM) summed over the tree, in MiB."""
        rss = hwm = 0
        for proc in self.tree():
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            rss += int(line.split()[1])
                        elif line.startswith("VmHWM:"):
                            hwm += int(line.split()[1])
            except OSError:
                continue
        return rss / 1024, hwm / 1024

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    pin: set[int] | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    full_env = dict(os.environ)
    full_env.update(env or {})

    def _pin() -> None:
        # Same effect as `taskset -c N`: set in the child before exec, inherited by its own children.
        if pin is not None:
            os.sched_setaffinity(0, pin)

    popen = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        preexec_fn=_pin,
        start_new_session=True,
    )
    log.close()
    return Proc(name, popen, log_path)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(proc: Proc, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (code {proc.popen.returncode}):\n{proc.log_tail()}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s:\n{proc.log_tail()}")

"""Run a server script with tracemalloc driven by SIGUSR1 (used by ``profile.py --tool tracemalloc``).

    python traced_server.py SNAPSHOT_DIR SCRIPT [ARGS…]

The first SIGUSR1 starts tracing (so start-up is not slowed down or counted); each later one
collects garbage and writes ``SNAPSHOT_DIR/snapN.pickle``.
"""

from __future__ import annotations

import gc
import runpy
import signal
import sys
import tracemalloc
from types import FrameType


def main() -> None:
    snapshot_dir, script, *rest = sys.argv[1:]
    taken = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        if not tracemalloc.is_tracing():
            tracemalloc.start(12)
            return
        gc.collect()
        taken += 1
        tracemalloc.take_snapshot().dump(f"{snapshot_dir}/snap{taken}.pickle")

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

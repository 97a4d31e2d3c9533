"""One "gateway process" for the two-process budget test: tasks looping reserve → work → settle.

Run as ``python budget_worker.py REDIS_URL PREFIX LIMIT_USD ESTIMATE_USD TASKS ATTEMPTS MAX_FACTOR SEED``.
It prints ``ready`` once connected and starts when a line arrives on stdin, so both processes contend
from the same moment; then prints one JSON line: admitted, refused, and the exact nano-USD it settled.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from decimal import Decimal

from redis.asyncio import Redis

from isthmus.accounting.budgets import BudgetBackend, BudgetSubject, RedisBudgets, usd_to_nano
from isthmus.errors import BudgetExceededError
from isthmus.store.snapshot import Budget


async def run_tasks(
    budgets: BudgetBackend,
    limit_usd: str,
    estimate: Decimal,
    tasks: int,
    attempts: int,
    max_factor: float,
    seed: int,
    pause: tuple[float, float] = (0.0, 0.004),
) -> dict[str, int]:
    """Shared by the in-process tests: ``budgets`` is any BudgetBackend."""
    rng = random.Random(seed)
    subjects = [BudgetSubject("team", 7, "research", Budget(total_usd=float(limit_usd)))]
    stats = {"admitted": 0, "refused": 0, "settled_nano": 0, "max_in_flight": 0}
    in_flight = 0

    async def one_task(factors: list[float], pauses: list[float]) -> None:
        nonlocal in_flight
        for factor, pause in zip(factors, pauses, strict=True):
            try:
                res = await budgets.reserve(subjects, estimate, 100, time.time())
            except BudgetExceededError:
                stats["refused"] += 1
                await asyncio.sleep(pause)
                continue
            stats["admitted"] += 1
            in_flight += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], in_flight)
            await asyncio.sleep(pause)  # the upstream call
            actual = (estimate * Decimal(str(factor))).quantize(Decimal("0.000001"))
            in_flight -= 1
            await budgets.settle(res, actual, 100)
            stats["settled_nano"] += usd_to_nano(actual)

    plans = [
        (
            [round(rng.uniform(0.5, max_factor), 3) for _ in range(attempts)],
            [rng.uniform(*pause) for _ in range(attempts)],
        )
        for _ in range(tasks)
    ]
    await asyncio.gather(*(one_task(f, p) for f, p in plans))
    return stats


async def main() -> None:
    url, prefix, limit_usd, estimate, tasks, attempts, max_factor, seed = sys.argv[1:9]
    client = Redis.from_url(url)
    try:
        budgets = RedisBudgets(client, prefix=prefix)
        await client.ping()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        # Upstream calls of 20-60 ms keep both processes contending for a good part of a second,
        # whatever the scheduling noise on a loaded machine.
        stats = await run_tasks(
            budgets,
            limit_usd,
            Decimal(estimate),
            int(tasks),
            int(attempts),
            float(max_factor),
            int(seed),
            pause=(0.02, 0.06),
        )
    finally:
        await client.aclose()
    print(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main())

"""The fallback load generator (when wrk is missing): asyncio + httpx in its own process.

    python -m benchlib.pyload --url http://127.0.0.1:8000 --plan PLAN --connections 64 \
        --duration 20 [--max-requests N]

`--connections` workers share one client holding as many keep-alive connections; each sends
the plan's next request, waits for the answer and records its latency, until the duration or
the request cap is reached. A run always gets at least `--min-requests` answers (default 1),
waiting up to `GRACE` seconds past the duration for them, so a starved machine reports a slow
figure rather than an empty one. It prints the same `BENCH_JSON {...}` line as `bench_load.lua`.
Python is far slower than wrk at generating load, so its figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchlib.plan import Plan, RequestMaker

GRACE = 120.0  # how long past the duration a run may wait for its minimum answers


def percentile(ordered: list[float], pct: float) -> float:
    """The `pct` percentile of an ascending list (nearest rank); 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def run(
    url: str, plan: Plan, connections: int, duration: float, max_requests: int, min_requests: int
) -> dict[str, Any]:
    """Drive the load; return the summary in `bench_load.lua`'s shape."""
    maker = RequestMaker(plan)
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(5.0)
    started = time.perf_counter()
    deadline = started + duration
    give_up = deadline + GRACE

    def going() -> bool:
        now = time.perf_counter()
        wanted = now < deadline or (len(latencies) < min_requests and now < give_up)
        return wanted and maker.sent < max_requests

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal received
        while going():
            method, path, headers, body = maker.next()
            sent = time.perf_counter()
            try:
                response = await client.request(method, path, headers=headers, content=body)
            except httpx.ConnectError:
                errors["connect"] += 1
                await asyncio.sleep(0.01)
                continue
            except httpx.TimeoutException:
                errors["timeout"] += 1
                continue
            except httpx.HTTPError:
                errors["read"] += 1
                continue
            latencies.append((time.perf_counter() - sent) * 1e6)
            received += len(response.content)
            if response.status_code > 399:
                errors["status"] += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": received,
        "errors": errors,
        "latency_us": {
            "p50": int(percentile(latencies, 50)),
            "p90": int(percentile(latencies, 90)),
            "p99": int(percentile(latencies, 99)),
            "max": int(latencies[-1]) if latencies else 0,
            "mean": sum(latencies) / len(latencies) if latencies else 0.0,
        },
    }


def main() -> None:
    """Parse arguments, run, print the summary line."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--url", required=True)
    top.add_argument("--plan", type=Path, required=True)
    top.add_argument("--connections", type=int, default=64)
    top.add_argument("--duration", type=float, default=10.0)
    top.add_argument("--max-requests", type=int, default=5_000_000)
    top.add_argument("--min-requests", type=int, default=1)
    ns = top.parse_args()
    plan = Plan.read(ns.plan)
    summary = asyncio.run(
        run(ns.url, plan, ns.connections, ns.duration, ns.max_requests, ns.min_requests)
    )
    sys.stdout.write("BENCH_JSON " + json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()

"""A closed-loop HTTP load generator, run as its own process by the benchmarks.

``--concurrency`` requests are kept in flight over keep-alive connections (aiohttp on uvloop)
until ``--count`` have been sent or ``--time-cap`` seconds have passed. Request ``i`` is item
``i`` of the spec (wrapping), so the caller decides which bodies repeat. Prints one JSON object:
requests sent, status counts, elapsed seconds, p50/p99 latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp
import uvloop


def request_file(method: str, path: str, items: list[tuple[dict[str, str], str]]) -> dict[str, Any]:
    """The spec ``run_load`` hands to this process: one method and path, many (headers, body)."""
    return {"method": method, "path": path, "items": [list(item) for item in items]}


class Load:
    def __init__(self, spec: dict[str, Any], count: int, time_cap: float) -> None:
        self.method: str = spec["method"]
        self.path: str = spec["path"]
        self.items: list[tuple[dict[str, str], bytes]] = [
            (headers, body.encode()) for headers, body in spec["items"]
        ]
        self.count = count
        self.deadline = time.monotonic() + time_cap
        self.next_index = itertools.count()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while True:
            index = next(self.next_index)
            if index >= self.count or time.monotonic() > self.deadline:
                return
            headers, body = self.items[index % len(self.items)]
            started = time.perf_counter()
            try:
                async with session.request(
                    self.method, self.path, data=body, headers=headers
                ) as reply:
                    await reply.read()
                    status = str(reply.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            self.latencies.append(time.perf_counter() - started)
            self.statuses[status] += 1


async def fire(url: str, load: Load, concurrency: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(load.worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies = sorted(load.latencies)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "sent": len(latencies),
        "statuses": dict(load.statuses),
        "elapsed": elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": cuts[98] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--spec", required=True, help="JSON from request_file()")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--time-cap", type=float, required=True, help="seconds")
    args = parser.parse_args()
    with open(args.spec) as spec:
        load = Load(json.load(spec), args.count, args.time_cap)
    result = uvloop.run(fire(args.url, load, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Resident memory of one service worker before and after many requests (target: < 20 MB).

Starts the service (one worker, so the uvicorn process is the worker) on a fresh database,
warms it up, then sends ``--requests`` in chunks to ``GET /api/v1/products`` (ORM session
path) and duplicate payment notifies (Core path, audit insert each time), reading VmRSS after
each chunk.

Run: ``.venv/bin/python bench/memory.py`` (100 000 requests; several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from harness import command_line, fresh_database, rss_mb, run_load, service
from loadgen import request_file
from notify import NOTIFY, V2, insert_orders, make_batch, seed

from app.config import Settings


def specs(settings: Settings, database: str) -> list[tuple[dict[str, Any], int]]:
    """(requests, expected status) pairs; the notifies repeat 100 already-paid orders."""
    batch = make_batch(V2, settings, "M", 100, 0.0)
    asyncio.run(insert_orders(database, batch.numbers))
    notifies = request_file("POST", NOTIFY, batch.requests)
    products = request_file("GET", "/api/v1/products", [({}, "")])
    return [(products, 200), (notifies, 200)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with fresh_database("mem") as database, service(database, 1) as ours:
        asyncio.run(seed(database))
        loads = specs(settings, database)
        for spec, status in loads:  # warm-up: pools, caches, prepared statements
            run_load(ours.url, spec, concurrency=args.concurrency, count=2000, time_cap=60,
                     ok_status=status)  # fmt: skip
        before = rss_mb(ours.pid)
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(f"{command_line()}\n{started}; after warm-up: {before:.1f} MB")
        sent = 0
        while sent < args.requests:
            spec, status = loads[(sent // args.chunk) % len(loads)]
            count = min(args.chunk, args.requests - sent)
            result = run_load(ours.url, spec, concurrency=args.concurrency, count=count,
                              time_cap=120, ok_status=status)  # fmt: skip
            sent += result.sent
            what = f"{spec['path']}, {result.rate:.0f}/s"
            print(f"{sent:7} requests ({what}): {rss_mb(ours.pid):.1f} MB")
        after = rss_mb(ours.pid)
    print("| requests | RSS after warm-up | RSS after | growth |\n|---|---|---|---|")
    print(f"| {sent} | {before:.1f} MB | {after:.1f} MB | {after - before:+.1f} MB |")


if __name__ == "__main__":
    main()

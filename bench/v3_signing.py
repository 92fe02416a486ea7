"""Should v3's RSA signing run off the event loop? Measured, in one process.

A v3 create order signs twice with the merchant's RSA-2048 key (the request's
``Authorization`` and the ``paySign``). Signing holds the CPU for a few hundred microseconds;
``asyncio.to_thread`` would let the loop go on meanwhile, if the signature released the GIL
and a core were free. Each round runs the same work both ways, alternating which goes first:
``--tasks`` coroutines in flight, each doing ``--requests`` times: sign, yield (a stand-in for
the wait on WeChat), sign. Reported: requests per second, and the event loop's lag (how late a
10 ms timer fires) at p50 and p99, median of the rounds.

Run: ``.venv/bin/python bench/v3_signing.py`` (under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.simulator.v3keys import new_rsa_key
from app.wechat.v3 import MerchantSigner

SIGNER = MerchantSigner("1900000109", "0123456789ABCDEF", new_rsa_key())
BODY = b'{"appid":"wx","mchid":"1900000109","description":"d","out_trade_no":"N1","amount":{}}'


def sign() -> str:
    return SIGNER.authorization("POST", "/v3/pay/transactions/jsapi", BODY, timestamp="1")


async def inline() -> str:
    return sign()


async def threaded() -> str:
    return await asyncio.to_thread(sign)


async def one_run(
    how: Callable[[], Awaitable[str]], tasks: int, requests: int
) -> tuple[float, list[float]]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - started - 0.01) * 1e3)

    async def client() -> None:
        for _ in range(requests):
            await how()
            await asyncio.sleep(0)
            await how()

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    stop.set()
    await watcher
    return tasks * requests / elapsed, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    ways = {"inline": inline, "to_thread": threaded}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    lags: dict[str, list[float]] = {name: [] for name in ways}
    for index in range(args.rounds):
        for name in sorted(ways, key=lambda n: (n == "inline") == (index % 2 == 1)):
            rate, lag = asyncio.run(one_run(ways[name], args.tasks, args.requests))
            rates[name].append(rate)
            lags[name].append(statistics.quantiles(lag, n=100)[98] if len(lag) > 1 else 0.0)
    print(f"\n.venv/bin/python {' '.join(sys.argv)}\nmedians of {args.rounds} rounds\n")
    print("| signing | requests/s (2 signatures each) | loop lag p99 ms |")
    print("|---|---|---|")
    for name in ways:
        rate, lag = statistics.median(rates[name]), statistics.median(lags[name])
        print(f"| {name} | {rate:.0f} | {lag:.1f} |")


if __name__ == "__main__":
    main()

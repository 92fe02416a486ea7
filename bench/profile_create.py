"""Where one service worker spends its time creating orders: a py-spy profile under load.

The simulator answers unified order after ``--latency-ms``; users log in first, then 64
orders are kept in flight while ``py-spy record`` samples the worker.

Run: ``.venv/bin/python bench/profile_create.py --out var/create.txt`` then
``.venv/bin/python bench/folded.py var/create.txt --match app/``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from create_order import add_product, log_in_users, order_requests
from harness import fresh_database, run_load, service, simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="var/create-profile.txt")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--observed", action="store_true", help="metrics and JSON logs on")
    args = parser.parse_args()
    py_spy = Path(sys.executable).parent / "py-spy"
    with (
        fresh_database("prof") as database,
        simulator(args.latency_ms) as sim,
        service(database, 1, sim.url, observed=args.observed) as ours,
    ):
        tokens = asyncio.run(log_in_users(ours.url, sim.url, 256))
        spec = order_requests(tokens, asyncio.run(add_product(ours.url)))
        command = [
            str(py_spy), "record", "--pid", str(ours.pid), "--rate", "250",
            "--nonblocking", "--format", "raw", "--output", args.out,
        ]  # fmt: skip
        recorder = subprocess.Popen(command)
        try:
            result = run_load(
                ours.url, spec, concurrency=args.concurrency, count=args.requests,
                time_cap=40, ok_status=201,
            )  # fmt: skip
        finally:
            recorder.send_signal(2)
            recorder.wait(timeout=30)
    print(f"{result.rate:.0f}/s p50 {result.p50_ms:.1f} ms; profile in {args.out}")


if __name__ == "__main__":
    main()

"""Where one service worker spends its time on the notify path: a py-spy profile under load.

Starts the service (one worker) on a fresh database, fires unique notifies at it and records
the worker with ``py-spy record`` meanwhile; writes a speedscope/flamegraph/raw file.

Run: ``.venv/bin/python bench/profile_notify.py --out var/notify.txt`` (needs
``.venv/bin/pip install py-spy``; ``--format raw`` output is folded stacks, one per line).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from harness import fresh_database, run_load, service
from loadgen import request_file
from notify import NOTIFY, V2, insert_orders, make_batch, seed

from app.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="var/notify-profile.txt")
    parser.add_argument("--format", default="raw", choices=["raw", "flamegraph", "speedscope"])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duplicates", type=float, default=0.0)
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    py_spy = Path(sys.executable).parent / "py-spy"
    with fresh_database("prof") as database, service(database, 1) as ours:
        asyncio.run(seed(database))
        batch = make_batch(V2, settings, "P", args.requests, args.duplicates)
        asyncio.run(insert_orders(database, batch.numbers))
        spec = request_file("POST", NOTIFY, batch.requests)
        command = [
            str(py_spy), "record", "--pid", str(ours.pid), "--rate", "250", "--nonblocking",
            "--format", args.format, "--output", args.out,
        ]  # fmt: skip
        recorder = subprocess.Popen(command)
        try:
            result = run_load(
                ours.url,
                spec,
                concurrency=args.concurrency,
                count=args.requests,
                time_cap=60,
                ok_status=200,
            )
        finally:
            recorder.send_signal(2)
            recorder.wait(timeout=30)
    print(f"{result.rate:.0f}/s p50 {result.p50_ms:.1f} ms; profile in {args.out}")


if __name__ == "__main__":
    main()

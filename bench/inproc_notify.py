"""CPU of the service's own code per notify, in one process: no HTTP server, no load generator.

The ASGI app is called directly (the same middlewares, routing and handler as under uvicorn) on
a fresh PostgreSQL database, ``--concurrency`` requests at a time; the figure is the process's
CPU time per request. Only the Python side is counted: PostgreSQL works in its own processes.
With ``--profile`` it also prints cProfile's top functions (cProfile slows every call, so use
those for where, and the figure without it for how much).

Run: ``.venv/bin/python bench/inproc_notify.py [--requests 4000] [--profile]``; under another
checkout: ``BENCH_APP_ROOT=<checkout> .venv/bin/python bench/inproc_notify.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from typing import Any

sys.path.insert(0, os.environ.get("BENCH_APP_ROOT", ""))  # the checkout measured, first
from harness import free_port, fresh_database, pg_url, run_load
from loadgen import request_file
from notify import NOTIFY, V2, XML_HEADERS, Message, insert_orders, make_batch, seed


async def _call(app: Any, message: Message) -> int:
    extra, text = message
    body = text.encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": NOTIFY, "raw_path": NOTIFY.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
        "headers": [
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in {**XML_HEADERS, **extra}.items()),
        ],
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _run(app: Any, bodies: list[Message], concurrency: int) -> float:
    queue = list(reversed(bodies))
    statuses: list[int] = []

    async def worker() -> None:
        while queue:
            statuses.append(await _call(app, queue.pop()))

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    spent = time.process_time() - started
    bad = [s for s in statuses if s != 200]
    if bad:
        raise SystemExit(f"{len(bad)} notifies answered {sorted(set(bad))}")
    return spent / len(bodies)


async def _served(app: Any, bodies: list[Message], concurrency: int) -> float:
    """Like ``_run``, but through uvicorn in this process (uvloop, httptools: as deployed) and
    the load generator in its own: the HTTP side is counted too."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, port=port, lifespan="off", access_log=False, log_level="warning", http="httptools"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    spec = request_file("POST", NOTIFY, bodies)
    started = time.process_time()
    result = await asyncio.to_thread(
        run_load, f"http://127.0.0.1:{port}", spec, concurrency=concurrency,
        count=len(bodies), time_cap=120, ok_status=200,
    )  # fmt: skip
    spent = time.process_time() - started
    server.should_exit = True
    await serving
    if result.ok != len(bodies):
        raise SystemExit(f"answers: {result.statuses}")
    return spent / len(bodies)


async def _measure(database: str, args: argparse.Namespace) -> None:
    os.environ.update(
        WXPAY_ENV_FILE="",
        WXPAY_DATABASE_URL=pg_url(database, driver="asyncpg"),
        WXPAY_SIMULATOR_MOUNT="false",
        WXPAY_SWEEP_INTERVAL_SECONDS="0",
        WXPAY_LOG_LEVEL="WARNING",
        WXPAY_METRICS="false",
    )
    import app
    from app.config import Settings
    from app.main import create_app

    print(f"measuring {os.path.dirname(os.path.dirname(app.__file__))}")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    await seed(database)
    app = create_app()
    async with app.router.lifespan_context(app):
        for label in ("warm-up", *(f"round {r}" for r in range(1, args.rounds + 1))):
            count = 500 if label == "warm-up" else args.requests
            batch = make_batch(V2, settings, f"I{label[-1]}", count, 0.0)
            await insert_orders(database, batch.numbers)
            bodies = batch.requests
            profiler = cProfile.Profile() if args.profile and label == "round 1" else None
            if profiler:
                profiler.enable()
            run = _served if args.served else _run
            cpu = await run(app, bodies, args.concurrency)
            if profiler:
                profiler.disable()
                stats = pstats.Stats(profiler).sort_stats(args.sort)
                stats.print_stats(args.top)
                for name in args.callers:
                    stats.print_callers(name)
            print(f"{label}: {cpu * 1000:.3f} ms CPU per notify{' (profiled)' if profiler else ''}")


def main() -> None:
    if "--served" in sys.argv:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--served", action="store_true", help="through uvicorn in this process")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--sort", default="tottime", help="cProfile sort key")
    parser.add_argument("--callers", nargs="*", default=[], help="functions to show callers of")
    args = parser.parse_args()
    with fresh_database("inproc") as database:
        asyncio.run(_measure(database, args))


if __name__ == "__main__":
    main()

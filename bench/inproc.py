"""Where the service's own CPU goes, per request: the service and uvicorn in this process.

The app is served by uvicorn inside this process (uvloop and httptools, as deployed) on a fresh
PostgreSQL database; the load comes from ``loadgen.py`` in its own process. The figure is this
process's CPU time per request, so it counts HTTP, framework and our code, but not PostgreSQL,
the load generator or the simulator. With ``--profile`` the first round runs under cProfile and
its top functions are printed: cProfile slows every Python call, so read it for *where*, and
the unprofiled rounds for *how much*.

Workloads: ``notify`` (unique v2 payment notifies, as ``bench/notify.py``) and ``create``
(``POST /api/v1/orders`` against the simulator, as ``bench/create_order.py``; ``--latency-ms``
is the simulator's delay, and ``--concurrency`` should keep the CPU the limit).

``--observed`` serves the service as the image runs it (``--observability on`` of the HTTP
benchmarks): /metrics in multiprocess mode, JSON logs at INFO with the service's access line
(uvicorn's off, as the image starts it), written to a file.

``--reference`` measures ``bench/reference.py`` the same way (the service still logs the users
in first, on the same database), for a function-by-function comparison of the two profiles.

Run: ``.venv/bin/python bench/inproc.py notify [--profile]``, ``.venv/bin/python bench/inproc.py
create --concurrency 128``. Another checkout: ``BENCH_APP_ROOT=<checkout> .venv/bin/python
bench/inproc.py ...`` (run both in turn, more than once: this machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("BENCH_APP_ROOT", ""))  # the checkout measured, first
import uvloop
from create_order import add_product, log_in_users, order_requests
from harness import (
    Server,
    free_port,
    fresh_database,
    observed_env,
    pg_url,
    run_load,
    simulator,
)
from loadgen import request_file
from notify import NOTIFY, V2, insert_orders, make_batch, seed

# One round's load: a request spec for loadgen.py and the status that counts as answered.
Round = Callable[[str, int], Awaitable[tuple[dict[str, Any], int]]]


async def _measure(
    args: argparse.Namespace, database: str, sim: Server | None, scratch: Path
) -> None:
    wechat = sim.url if sim else "http://127.0.0.1:9"
    os.environ.update(
        WXPAY_ENV_FILE="",
        WXPAY_DATABASE_URL=pg_url(database, driver="asyncpg"),
        WXPAY_PAY_API_BASE=wechat,
        WXPAY_MINIPROGRAM_API_BASE=wechat,
        WXPAY_SIMULATOR_MOUNT="false",
        WXPAY_SWEEP_INTERVAL_SECONDS="0",
        WXPAY_LOG_LEVEL="WARNING",
        WXPAY_METRICS="false",
        REF_DATABASE_URL=pg_url(database),
        REF_PAY_API_BASE=wechat,
    )
    if args.observed:
        os.environ.update(observed_env(scratch))
    import app as package
    from app.main import create_app

    print(f"measuring {'the reference' if args.reference else package.__path__[0]}")
    # The service sets the stage either way (users log in through it), on the one database.
    log = scratch / "service.log" if args.observed else None
    async with _serving(create_app(), log) as url:
        next_round = await _workload(args, database, url, sim)
        if not args.reference:
            await _rounds(args, url, next_round)
    if args.reference:
        import reference

        async with _serving(reference.app, None) as url:
            await _rounds(args, url, next_round)


@contextlib.asynccontextmanager
async def _serving(app: Any, log: Path | None) -> AsyncIterator[str]:
    """``app`` under uvicorn in this process (its lifespan run by uvicorn); its URL. With a
    ``log`` file, uvicorn's logs and the service's go there at INFO (uvicorn's access log off,
    as the image's entrypoint starts it: the service writes its own access line)."""
    import uvicorn

    port = free_port()
    log_options: dict[str, Any] = {}
    if log is not None:
        log_options = {"log_level": "info", "log_config": _log_config(log)}
    config = uvicorn.Config(
        app, port=port, http="httptools", lifespan="on",
        **({"access_log": False, "log_level": "warning"} | log_options),
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn sets a flag, offers no event)
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def _log_config(log: Path) -> dict[str, Any]:
    """uvicorn's own logging configuration, its handlers writing to ``log``."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler.pop("stream", None)
        handler |= {"class": "logging.FileHandler", "filename": str(log)}
    config["root"] = {"handlers": ["default"], "level": "INFO"}
    return config


async def _rounds(args: argparse.Namespace, url: str, next_round: Round) -> None:
    for index in range(args.rounds + 1):
        label = "warm-up" if index == 0 else f"round {index}"
        count = 300 if index == 0 else args.requests
        spec, ok_status = await next_round(label, count)
        profiler = cProfile.Profile() if args.profile and index == 1 else None
        cpu = await _timed(url, spec, ok_status, count, args.concurrency, profiler)
        note = " (profiled)" if profiler else ""
        print(f"{label}: {cpu * 1000:.3f} ms CPU per request{note}")
        if profiler:
            _print_profile(profiler, args)


async def _workload(args: argparse.Namespace, database: str, url: str, sim: Server | None) -> Round:
    if args.workload == "notify":
        from app.config import Settings

        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        await seed(database)

        async def notifies(label: str, count: int) -> tuple[dict[str, Any], int]:
            batch = make_batch(V2, settings, f"I{label[-1]}", count, 0.0)
            await insert_orders(database, batch.numbers)
            return request_file("POST", NOTIFY, batch.requests), 200

        return notifies
    assert sim is not None
    tokens = await log_in_users(url, sim.url, args.users)
    spec = order_requests(tokens, await add_product(url))

    async def orders(label: str, count: int) -> tuple[dict[str, Any], int]:
        return spec, 201

    return orders


async def _timed(
    url: str, spec: dict[str, Any], ok_status: int, count: int, concurrency: int, profiler: Any
) -> float:
    if profiler:
        profiler.enable()
    started = time.process_time()
    result = await asyncio.to_thread(
        run_load, url, spec, concurrency=concurrency, count=count, time_cap=120,
        ok_status=ok_status,
    )  # fmt: skip
    spent = time.process_time() - started
    if profiler:
        profiler.disable()
    if result.ok != result.sent:
        raise SystemExit(f"answers: {result.statuses}")
    return spent / result.ok


def _print_profile(profiler: Any, args: argparse.Namespace) -> None:
    stats = pstats.Stats(profiler).sort_stats(args.sort)
    stats.print_stats(args.top)
    for name in args.callers:
        stats.print_callers(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("workload", choices=["notify", "create"])
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=256, help="create: users logged in")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="create: the simulator's")
    parser.add_argument("--reference", action="store_true", help="bench/reference.py instead")
    parser.add_argument("--observed", action="store_true", help="metrics and JSON logs on")
    parser.add_argument("--profile", action="store_true", help="cProfile the first round")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--sort", default="tottime", help="cProfile's sort key")
    parser.add_argument("--callers", nargs="*", default=[], help="functions to show callers of")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(fresh_database("inproc"))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wxpay-inproc-")))
        sim = stack.enter_context(simulator(args.latency_ms)) if args.workload == "create" else None
        asyncio.run(_measure(args, database, sim, scratch))


if __name__ == "__main__":
    main()

"""CPU per request of the read endpoints, in process, in units of a bare FastAPI echo.

The service (``app.main.create_app``, lifespan included) runs in this process on a fresh
PostgreSQL database; WeChat is the simulator app, reached in process through an ASGI transport.
Each endpoint is called straight through ASGI (no sockets, no server, no load generator), so
the CPU measured is the service's own: routing, dependencies, the database round trip's client
side, serialisation. Runs of each endpoint alternate with runs of the echo (the same FastAPI,
one ``async def`` route, telemetry off like the service), and each figure is reported as a
multiple of the echo's CPU per call in the same round, so machine speed cancels out.

``BENCH_APP_ROOT`` measures another checkout (bench/harness.py): before and after with the
same script. Run: ``.venv/bin/python bench/reads.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
from collections.abc import Awaitable, Callable

import httpx
from harness import APP_ROOT, asgi_cpu_per_call, command_line, fresh_database, pg_url

sys.path.insert(0, str(APP_ROOT))  # the measured checkout's ``app``, before any installed one

from tail_latency import ECHO_PATH, echo_app

from app.config import Settings
from app.main import create_app
from app.simulator import SimulatorConfig, create_simulator_app

READS = ("/api/v1/products", "/api/v1/auth/session", "/api/v1/orders")
ADMIN = {"X-Admin-Token": "dev-admin-token"}


async def prepare(client: httpx.AsyncClient, sim: httpx.AsyncClient) -> dict[str, str]:
    """A product, a logged-in user with five orders; that user's Authorization header."""
    body = {"name": "短信套餐", "description": "短信平台-短信套餐购买", "price_fen": 990}
    (await client.post("/api/v1/admin/products", json=body, headers=ADMIN)).raise_for_status()
    code = (await sim.post("/_control/login-code", json={})).raise_for_status().json()["code"]
    login = await client.post("/api/v1/auth/login", json={"code": code})
    auth = {"Authorization": f"Bearer {login.raise_for_status().json()['token']}"}
    for _ in range(5):
        order = {"product_id": 1, "quantity": 1}
        (await client.post("/api/v1/orders", json=order, headers=auth)).raise_for_status()
    return auth


async def measure(
    database: str, calls: int, rounds: int, profile: str | None = None
) -> dict[str, list[float]]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=pg_url(database, driver="asyncpg"),
        miniprogram_api_base="http://sim.test",
        pay_api_base="http://sim.test",
        simulator_mount=False,
        sweep_interval_seconds=0,
        log_level="WARNING",
    )
    sim_app = create_simulator_app(SimulatorConfig.from_settings(settings))
    to_sim = httpx.ASGITransport(app=sim_app)
    app = create_app(settings, transport=to_sim)
    echo = echo_app("off")
    ratios: dict[str, list[float]] = {path: [] for path in READS}
    async with (
        sim_app.router.lifespan_context(sim_app),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client,
        httpx.AsyncClient(transport=to_sim, base_url="http://sim.test") as sim,
    ):
        auth = await prepare(client, sim)
        calls_of: dict[str, Callable[[int], Awaitable[float]]] = {
            path: (lambda n, path=path: asgi_cpu_per_call(app, path, n, auth)) for path in READS
        }

        async def echo_run(n: int) -> float:
            return await asgi_cpu_per_call(echo, ECHO_PATH, n)

        for call in (*calls_of.values(), echo_run):
            await call(200)  # warm: pools, caches, compiled statements
        if profile:
            await _profiled(calls_of[profile], calls)
            return ratios
        for index in range(rounds):
            for path, call in calls_of.items():
                if index % 2 == 0:
                    ours, unit = await call(calls), await echo_run(calls)
                else:
                    unit, ours = await echo_run(calls), await call(calls)
                ratios[path].append(ours / unit)
                ratios.setdefault(f"{path} µs", []).append(ours)
                ratios.setdefault("echo µs", []).append(unit)
    return ratios


async def _profiled(call: Callable[[int], Awaitable[float]], calls: int) -> None:
    """One run of ``call`` under cProfile, its top functions printed: read it for *where* the
    time goes (cProfile slows every Python call), the unprofiled rounds for *how much*."""
    profiler = cProfile.Profile()
    profiler.enable()
    await call(calls)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="per run")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--profile", choices=READS, help="profile one run of this path instead")
    args = parser.parse_args()
    print(f"{command_line()}\nmeasuring {APP_ROOT}, load average {os.getloadavg()}")
    with fresh_database("reads") as database:
        ratios = asyncio.run(measure(database, args.calls, args.rounds, args.profile))
    if args.profile:
        return
    print(f"\nmedians of {args.rounds} rounds of {args.calls} calls each\n")
    print("| endpoint | CPU per call, echo = 1 | µs per call |")
    print("|---|---:|---:|")
    print(f"| bare echo | 1 | {statistics.median(ratios['echo µs']):.0f} |")
    for path in READS:
        cost = statistics.median(ratios[f"{path} µs"])
        print(f"| `GET {path}` | {statistics.median(ratios[path]):.1f} | {cost:.0f} |")


if __name__ == "__main__":
    main()

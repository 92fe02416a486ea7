"""CPU of two pieces of a create order, each beside its bare counterpart, in one process.

``pipeline``: a trivial route (``GET /healthz``) through the service's whole app (middlewares,
routing, FastAPI's handler) against a one-route FastAPI app (the echo of ``bench/reads.py``) and
a bare ASGI function answering the same bytes: what the request pipeline costs before any of
our work starts.

``exchange``: one unified order to the simulator (in its own process, answering at once)
through our gateway (``MeteredGateway`` over the v2 adapter and ``WeChatPayClient``: models,
retries, the capped read, metrics) against ``bench/reference.py``'s bare ``httpx`` post with
the same XML codec; 64 in flight. Only this process's CPU counts, not the simulator's.

Runs alternate between the variants and the medians are printed. Run:
``.venv/bin/python bench/pieces.py pipeline`` or ``... exchange`` (under a minute each).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import itertools
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop
from harness import APP_ROOT, asgi_cpu_per_call, command_line, simulator

sys.path.insert(0, str(APP_ROOT))

from tail_latency import ECHO_PATH, echo_app

Run = Callable[[], Awaitable[float]]


async def alternate(variants: dict[str, Run], rounds: int) -> None:
    results: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        await run()  # warm
    for index in range(rounds):
        order = list(variants.items())
        for name, run in order if index % 2 == 0 else reversed(order):
            results[name].append(await run())
    for name, values in results.items():
        print(f"{name}: {statistics.median(values):.0f} µs (runs: {[round(v) for v in values]})")


async def pipeline(rounds: int) -> None:
    from app.config import Settings
    from app.main import create_app

    service = create_app(Settings(_env_file=None, metrics=False, simulator_mount=False))  # type: ignore[call-arg]
    echo = echo_app("off")

    async def bare(scope: object, receive: object, send: Callable[..., Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

    await alternate(
        {
            "bare ASGI": lambda: asgi_cpu_per_call(bare, "/healthz", 2000),  # type: ignore[arg-type]
            "one-route FastAPI": lambda: asgi_cpu_per_call(echo, ECHO_PATH, 2000),
            "the service, GET /healthz": lambda: asgi_cpu_per_call(service, "/healthz", 2000),
        },
        rounds,
    )


async def exchange(sim_url: str, rounds: int) -> None:
    os.environ["REF_PAY_API_BASE"] = sim_url
    import reference

    from app.adapters.wechatpay_v2 import WeChatPayV2Gateway
    from app.config import Settings
    from app.gateway import PrepayOrder
    from app.httpclient import build_http_client
    from app.metered_gateway import MeteredGateway
    from app.wechat.client import WeChatPayClient

    settings = Settings(_env_file=None, pay_api_base=sim_url, miniprogram_api_base=sim_url)  # type: ignore[call-arg]
    async with build_http_client(settings) as http, build_http_client(reference.SETTINGS) as ref:
        reference.state.http = ref
        client = WeChatPayClient.from_settings(settings, http)
        v2 = WeChatPayV2Gateway(client, notify_url=reference.NOTIFY_URL, refund_notify_url=None)
        gateway = MeteredGateway(v2)
        login = await http.post(f"{sim_url}/_control/login-code", json={})
        openid = login.raise_for_status().json()["openid"]
        numbers = (f"B{n:020d}" for n in itertools.count())
        expire = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)

        def order() -> PrepayOrder:
            return PrepayOrder(next(numbers), "短信套餐", 990, openid, "127.0.0.1", expire, "p1x1")

        async def ours() -> None:
            await gateway.prepay(order())

        async def bare() -> None:
            fields = dataclasses.asdict(order())
            await reference.unified_order({**fields, "product_id": 1, "quantity": 1})

        await alternate(
            {"ours": lambda: cpu_per_call(ours), "reference": lambda: cpu_per_call(bare)}, rounds
        )


async def cpu_per_call(call: Callable[[], Awaitable[None]], calls: int = 1000) -> float:
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            await call()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("piece", choices=["pipeline", "exchange"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"{command_line()}\nmeasuring {APP_ROOT}, load average {os.getloadavg()}")
    if args.piece == "pipeline":
        uvloop.run(pipeline(args.rounds))
        return
    with simulator(0.0) as sim:
        uvloop.run(exchange(sim.url, args.rounds))


if __name__ == "__main__":
    main()

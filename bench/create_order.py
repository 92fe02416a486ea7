"""Create-order throughput and added latency: the service against the raw-asyncpg reference.

The simulator (its own process) answers unified order after ``--latency-ms`` (100 ms). Users log
in through the service (codes minted at the simulator) before timing; their users, sessions
and the product are copied into the reference's database, so the same bearer tokens work on
both. Every round fires the same requests (``POST /api/v1/orders``, tokens round-robin) at the
service and at ``bench/reference.py``, one after the other, alternating which goes first.
"Added" latency is the latency minus the simulator's own delay. ``--filler N`` then fills both
databases alike with N orders of history and N notify audit rows (``bench/filler.py``), to
compare with an empty database.

``--api-version v3``: the service, the reference and the simulator share generated v3 keys, and
every order goes through v3's JSAPI prepay (RSA-signed request, RSA-verified answer, RSA pay
params) instead of v2's unified order.

Run: ``.venv/bin/python bench/create_order.py`` (about 3 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from filler import Filler, fill
from harness import (
    OBSERVABILITY,
    LoadResult,
    Server,
    V3Keys,
    baseline_service,
    baseline_targets,
    command_line,
    cpu_seconds,
    fresh_database,
    median,
    observed_targets,
    pg_url,
    reference,
    run_load,
    service,
    simulator,
    version_env,
)
from loadgen import request_file

ORDERS = "/api/v1/orders"
ADMIN = {"X-Admin-Token": "dev-admin-token"}
COPIED_TABLES = ("users", "auth_sessions", "products")


async def log_in_users(service_url: str, simulator_url: str, count: int) -> list[str]:
    """Bearer tokens of ``count`` new users, logged in the way the mini-program does."""
    limits = asyncio.Semaphore(32)

    async def one(http: httpx.AsyncClient) -> str:
        async with limits:
            minted = await http.post(f"{simulator_url}/_control/login-code", json={})
            code = minted.raise_for_status().json()["code"]
            reply = await http.post(f"{service_url}/api/v1/auth/login", json={"code": code})
            token: str = reply.raise_for_status().json()["token"]
            return token

    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        return list(await asyncio.gather(*(one(http) for _ in range(count))))


async def add_product(service_url: str) -> int:
    body = {"name": "短信套餐", "description": "短信平台-短信套餐购买", "price_fen": 990}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        reply = await http.post(f"{service_url}/api/v1/admin/products", json=body, headers=ADMIN)
        product_id: int = reply.raise_for_status().json()["id"]
        return product_id


async def copy_accounts(source: str, target: str) -> None:
    """Users, sessions and products, ids included, from the service's database."""
    src, dst = await asyncpg.connect(pg_url(source)), await asyncpg.connect(pg_url(target))
    try:
        for table in COPIED_TABLES:
            rows = await src.fetch(f"SELECT * FROM {table}")
            await dst.copy_records_to_table(table, records=rows, columns=list(rows[0].keys()))
    finally:
        await src.close()
        await dst.close()


def order_requests(tokens: list[str], product_id: int) -> dict[str, Any]:
    body = json.dumps({"product_id": product_id, "quantity": 1})
    items = [
        ({"Authorization": f"Bearer {t}", "Content-Type": "application/json"}, body) for t in tokens
    ]
    return request_file("POST", ORDERS, items)


@dataclass(frozen=True, slots=True)
class Run:
    spec: dict[str, Any]
    simulator_pid: int
    latency_ms: float
    per_slot: int
    max_requests: int
    time_cap: float


Key = tuple[int, str]  # in flight, target


def bench_levels(
    run: Run, servers: dict[str, Server], levels: list[int], rounds: int
) -> dict[Key, list[LoadResult]]:
    results: dict[Key, list[LoadResult]] = defaultdict(list)
    for server in servers.values():  # warm-up: connections, prepared statements, caches
        run_load(server.url, run.spec, concurrency=16, count=300, time_cap=30, ok_status=201)
    for level in levels:
        count = min(level * run.per_slot, run.max_requests)
        targets = list(servers)
        for index in range(rounds):
            # Each target goes first in turn.
            for target in targets[index % len(targets) :] + targets[: index % len(targets)]:
                sim_cpu = cpu_seconds(run.simulator_pid)
                result = run_load(
                    servers[target].url,
                    run.spec,
                    concurrency=level,
                    count=count,
                    time_cap=run.time_cap,
                    ok_status=201,
                    server_pid=servers[target].pid,
                )
                results[(level, target)].append(result)
                busy = (cpu_seconds(run.simulator_pid) - sim_cpu) / result.elapsed
                line = _line(result, run)
                print(
                    f"  {level:3} in flight round {index + 1} {target:9} {line} sim cpu {busy:.0%}"
                )
    return results


def _line(result: LoadResult, run: Run) -> str:
    bad = {k: v for k, v in result.statuses.items() if k != "201"}
    errors = f" errors={bad}" if bad else ""
    added = result.p50_ms - run.latency_ms
    latency = f"p50 {result.p50_ms:6.1f} ms (+{added:.1f}) p99 {result.p99_ms:6.1f} ms"
    return f"{result.rate:6.0f}/s {latency} cpu {result.cpu_ms_per_ok:.2f} ms/order{errors}"


def report(results: dict[Key, list[LoadResult]], rounds: int, latency_ms: float) -> None:
    print(f"\n{command_line()}\nmedians of {rounds} rounds; added = latency - {latency_ms:g} ms\n")
    print(
        "| in flight | service | orders/s | ref orders/s | / ref "
        "| added p50 / p99 ms | ref added p50 / p99 ms | CPU ms/order | ref CPU ms/order |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for level, target in sorted(results):
        if target == "reference":
            continue
        ours, ref = results[(level, target)], results[(level, "reference")]
        rates = f"{median([r.rate for r in ours]):.0f} | {median([r.rate for r in ref]):.0f}"
        print(
            f"| {level} | {target} | {rates} | {_ratio(ours, ref):.2f} "
            f"| {_added(ours, latency_ms)} | {_added(ref, latency_ms)} "
            f"| {_cpu(ours)} | {_cpu(ref)} |"
        )
    for level, target in sorted(results):
        if target == "observed" and (level, "ours") in results:
            cost = _ratio(results[(level, target)], results[(level, "ours")])
            cpu = _cpu_ratio(results[(level, target)], results[(level, "ours")])
            print(f"observed / ours at {level} in flight: rate {cost:.2f}, CPU per order {cpu:.2f}")


def _cpu(results: list[LoadResult]) -> str:
    return f"{median([r.cpu_ms_per_ok for r in results]):.2f}"


def _cpu_ratio(ours: list[LoadResult], base: list[LoadResult]) -> float:
    return median([o.cpu_ms_per_ok / b.cpu_ms_per_ok for o, b in zip(ours, base, strict=True)])


def _ratio(ours: list[LoadResult], ref: list[LoadResult]) -> float:
    return median([o.rate / r.rate for o, r in zip(ours, ref, strict=True)])


def _added(results: list[LoadResult], latency_ms: float) -> str:
    p50 = median([r.p50_ms for r in results]) - latency_ms
    p99 = median([r.p99_ms for r in results]) - latency_ms
    return f"{p50:.1f} / {p99:.1f}"


def _server(
    target: str, database: str, wechat_url: str, env: dict[str, str], baseline: str | None
) -> contextlib.AbstractContextManager[Server]:
    if target == "reference":
        return reference(database, 1, wechat_url, extra=env)
    if target.startswith("baseline"):
        assert baseline is not None
        return baseline_service(Path(baseline), target, database, 1, wechat_url, env)
    return service(database, 1, wechat_url, extra=env, observed=target == "observed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--per-slot", type=int, default=20, help="requests per in-flight slot")
    parser.add_argument("--max-requests", type=int, default=1500, help="per run")
    parser.add_argument("--time-cap", type=float, default=25.0, help="seconds per run")
    parser.add_argument("--filler", type=int, default=0, help="orders of history in each database")
    parser.add_argument("--api-version", choices=["v2", "v3"], default="v2")
    parser.add_argument(
        "--observability",
        choices=OBSERVABILITY,
        default="off",
        help="the service without metrics and JSON logs, with them, or both side by side",
    )
    parser.add_argument("--baseline", help="a checkout of the service to measure beside it")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        key_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wxpay-bench-v3-")))
        env = version_env(V3Keys.under(key_dir) if args.api_version == "v3" else None)
        targets = [*observed_targets(args.observability), "reference"]
        databases = {t: stack.enter_context(fresh_database(t[:4])) for t in targets}
        if args.baseline:  # another checkout, on the schema it expects, observed as ours is
            for target in baseline_targets(args.observability):
                base = fresh_database("base", app_root=Path(args.baseline))
                databases[target] = stack.enter_context(base)
        sim = stack.enter_context(simulator(args.latency_ms, extra=env))
        first = databases[targets[0]]
        with service(first, 1, sim.url, extra=env) as ours:
            tokens = asyncio.run(log_in_users(ours.url, sim.url, args.users))
            product_id = asyncio.run(add_product(ours.url))
        for database in databases.values():
            if database != first:  # the same users, tokens and product everywhere
                asyncio.run(copy_accounts(first, database))
            if args.filler:
                filled = asyncio.run(fill(database, Filler(args.filler, args.filler, due=0)))
                print(f"  {database}: {args.filler:,} filler orders in {filled.seconds:.0f} s")
        spec = order_requests(tokens, product_id)
        run = Run(spec, sim.pid, args.latency_ms, args.per_slot, args.max_requests, args.time_cap)
        servers = {
            target: stack.enter_context(_server(target, db, sim.url, env, args.baseline))
            for target, db in databases.items()
        }
        results = bench_levels(run, servers, args.in_flight, args.rounds)
    report(results, args.rounds, args.latency_ms)


if __name__ == "__main__":
    main()

"""Tail latency of each endpoint beside a bare FastAPI echo, and the cost of FastAPI's telemetry.

The service runs as ``uvicorn app.main:app --workers 2`` on a fresh PostgreSQL database, with
the simulator (its own process, ``--latency-ms``, default 0) as WeChat. Beside it, under the
same uvicorn flags and ``--workers 2``, run two bare echo apps: ``echo`` below, one
``async def`` route returning a small JSON, built once with FastAPI's telemetry switched off
(``telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False}``,
what the service does unless ``WXPAY_TELEMETRY``) and once with FastAPI's defaults.

Every round, each endpoint is paired with a run against the echo (telemetry off), same
request count and concurrency, the pair's order alternating; the ratio is p99(endpoint) /
p99(echo) of the pair, and tables show medians over rounds. Endpoint order rotates per round.
Then ``--telemetry-rounds`` pairs compare the echo with defaults against the echo with the
hooks off (throughput and server CPU per request), and an in-process run calls both echo apps
directly through ASGI (no sockets, no server) to isolate the per-request cost.

Endpoints: ``GET /healthz``, ``GET /api/v1/products``, ``GET /api/v1/auth/session`` and
``GET /api/v1/orders`` (bearer tokens of 32 users with 5 orders each), ``POST
/wechat/pay/notify`` repeating 100 already-paid orders' notifies
(``app.simulator.messages.payment_notify_body``; a duplicate still writes an audit row) and
``POST /api/v1/orders`` (32 other users, tokens round-robin).

Run: ``.venv/bin/python bench/tail_latency.py`` (about 6 minutes with the defaults).

The echo apps are this module's ``echo`` (``ECHO_TELEMETRY=default|off``); uvicorn imports it
with ``bench/`` on the path, so its workers import the driver's modules too, but only the
route runs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import time
import timeit
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from create_order import add_product, log_in_users, order_requests
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from harness import (
    APP_ROOT,
    BENCH,
    LoadResult,
    Server,
    asgi_cpu_per_call,
    child_pids,
    command_line,
    cpu_seconds,
    free_port,
    fresh_database,
    median,
    run_load,
    server_process,
    service,
    simulator,
    uvicorn_command,
)
from loadgen import request_file
from notify import NOTIFY, V2, insert_orders, make_batch

from app.config import Settings

TELEMETRY_OFF = cast(
    TelemetryConfig,
    {"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
)
ECHO_PATH = "/echo"


def echo_app(telemetry: str) -> FastAPI:
    """The bare echo: FastAPI defaults (``default``) or every telemetry switch off (``off``)."""
    app = FastAPI() if telemetry == "default" else FastAPI(telemetry=TELEMETRY_OFF)

    @app.get(ECHO_PATH)
    async def echo_route() -> dict[str, str]:
        return {"status": "ok"}

    return app


echo = echo_app(os.environ.get("ECHO_TELEMETRY", "off"))

ECHO = "echo"
ECHO_DEFAULT = "echo (FastAPI defaults)"
READ_USERS = 32
WRITE_USERS = 32
ORDERS_PER_READ_USER = 5
NOTIFY_ORDERS = 100


@contextmanager
def echo_server(telemetry: str, workers: int) -> Iterator[Server]:
    port = free_port()
    env = {"ECHO_TELEMETRY": telemetry, "PYTHONPATH": str(BENCH)}
    command = uvicorn_command("tail_latency:echo", port, workers)
    with server_process(command, env, ECHO_PATH, port) as server:
        yield server


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    pid: int  # uvicorn's master; its children are the workers
    spec: dict[str, Any]
    ok_status: int


@dataclass(frozen=True, slots=True)
class Measured:
    load: LoadResult
    cpu_ms: float  # server workers' CPU per request
    ok_status: int

    def line(self) -> str:
        bad = {k: v for k, v in self.load.statuses.items() if k != str(self.ok_status)}
        errors = f" errors={bad}" if bad else ""
        return (
            f"{self.load.rate:6.0f}/s p50 {self.load.p50_ms:6.1f} ms "
            f"p99 {self.load.p99_ms:6.1f} ms cpu {self.cpu_ms:5.2f} ms/req{errors}"
        )


@dataclass(frozen=True, slots=True)
class Shape:
    concurrency: int
    count: int
    time_cap: float


def workers_cpu(pid: int) -> float:
    return sum(cpu_seconds(child) for child in child_pids(pid))


def measure(target: Target, run: Shape) -> Measured:
    before = workers_cpu(target.pid)
    load = run_load(
        target.url,
        target.spec,
        concurrency=run.concurrency,
        count=run.count,
        time_cap=run.time_cap,
        ok_status=target.ok_status,
    )
    used = workers_cpu(target.pid) - before
    return Measured(load, used / max(load.sent, 1) * 1000, target.ok_status)


def bearer(tokens: list[str]) -> list[tuple[dict[str, str], str]]:
    return [({"Authorization": f"Bearer {t}"}, "") for t in tokens]


def prepare(
    settings: Settings, database: str, ours: Server, sim: Server
) -> dict[str, tuple[dict[str, Any], int]]:
    """Users, orders and paid notifies in place; the request spec of each endpoint."""
    # User 1 (logged in alone, first) owns the notify orders ``insert_orders`` writes, so the
    # order lists of the read users stay at ORDERS_PER_READ_USER each.
    asyncio.run(log_in_users(ours.url, sim.url, 1))
    readers = asyncio.run(log_in_users(ours.url, sim.url, READ_USERS))
    writers = asyncio.run(log_in_users(ours.url, sim.url, WRITE_USERS))
    product_id = asyncio.run(add_product(ours.url))
    if product_id != 1:
        raise RuntimeError(f"notify orders point at product 1, the product is {product_id}")
    created = run_load(
        ours.url,
        order_requests(readers, product_id),
        concurrency=16,
        count=READ_USERS * ORDERS_PER_READ_USER,
        time_cap=60,
        ok_status=201,
    )
    batch = make_batch(V2, settings, "TL", NOTIFY_ORDERS, 0.0)
    asyncio.run(insert_orders(database, batch.numbers))
    notifies = request_file("POST", NOTIFY, batch.requests)
    paid = run_load(
        ours.url, notifies, concurrency=16, count=NOTIFY_ORDERS, time_cap=60, ok_status=200
    )
    if created.ok != created.sent or paid.ok != paid.sent:
        raise RuntimeError(f"setup failed: orders {created.statuses}, notifies {paid.statuses}")
    return {
        "GET /healthz": (request_file("GET", "/healthz", [({}, "")]), 200),
        "GET /api/v1/products": (request_file("GET", "/api/v1/products", [({}, "")]), 200),
        "GET /api/v1/auth/session": (
            request_file("GET", "/api/v1/auth/session", bearer(readers)),
            200,
        ),
        "GET /api/v1/orders": (request_file("GET", "/api/v1/orders", bearer(readers)), 200),
        "POST /wechat/pay/notify (duplicate)": (notifies, 200),
        "POST /api/v1/orders": (order_requests(writers, product_id), 201),
    }


Pairs = dict[str, list[tuple[Measured, Measured]]]  # endpoint -> [(endpoint run, echo run)]


def endpoint_rounds(
    targets: dict[str, Target], echo_target: Target, run: Shape, rounds: int, deadline: float
) -> Pairs:
    pairs: Pairs = defaultdict(list)
    names = list(targets)
    for index in range(rounds):
        shift = index % len(names)
        for position, name in enumerate(names[shift:] + names[:shift]):
            if time.monotonic() > deadline:
                print(f"  time cap reached in round {index + 1}; reporting what ran")
                return pairs
            echo_first = (index + position) % 2 == 0
            runs: dict[str, Measured] = {}
            for which in (ECHO, name) if echo_first else (name, ECHO):
                runs[which] = measure(echo_target if which == ECHO else targets[name], run)
                print(f"  round {index + 1} {which:36} {runs[which].line()}")
            pairs[name].append((runs[name], runs[ECHO]))
    return pairs


def telemetry_rounds(
    echo_off: Target, echo_default: Target, run: Shape, rounds: int
) -> list[tuple[Measured, Measured]]:
    """(hooks off, FastAPI defaults) per round, alternating which runs first."""
    results: list[tuple[Measured, Measured]] = []
    for index in range(rounds):
        runs: dict[str, Measured] = {}
        order = ((ECHO, echo_off), (ECHO_DEFAULT, echo_default))
        for name, target in order if index % 2 == 0 else order[::-1]:
            runs[name] = measure(target, run)
            print(f"  telemetry round {index + 1} {name:24} {runs[name].line()}")
        results.append((runs[ECHO], runs[ECHO_DEFAULT]))
    return results


def in_process(calls: int, rounds: int) -> dict[str, list[float]]:
    """µs per request of each echo app driven directly, strictly alternating short runs (the
    box's noise swamps long ones), after a warm-up."""
    apps = {ECHO: echo_app("off"), ECHO_DEFAULT: echo_app("default")}
    per_call: dict[str, list[float]] = defaultdict(list)

    async def go() -> None:
        for app in apps.values():
            await asgi_cpu_per_call(app, ECHO_PATH, 2000)
        for index in range(rounds):
            names = list(apps) if index % 2 == 0 else list(apps)[::-1]
            for name in names:
                per_call[name].append(await asgi_cpu_per_call(apps[name], ECHO_PATH, calls))

    asyncio.run(go())
    return per_call


def check_cost() -> dict[str, float]:
    """µs per call of the per-request "is telemetry configured?" check FastAPI runs in
    ``FastAPI.__call__`` (best of 7 repeats of 20,000 calls)."""
    costs: dict[str, float] = {}
    for name, app in ((ECHO, echo_app("off")), (ECHO_DEFAULT, echo_app("default"))):
        check = app._native_telemetry.enabled
        costs[name] = min(timeit.repeat(check, number=20_000, repeat=7)) / 20_000 * 1e6
    return costs


def report_endpoints(pairs: Pairs, args: argparse.Namespace) -> None:
    echo_runs = [e for runs in pairs.values() for _, e in runs]
    rounds = max((len(r) for r in pairs.values()), default=0)
    print(
        f"\nmedians of {rounds} rounds; {args.requests} requests per run, "
        f"{args.concurrency} in flight; service and echo each --workers 2; "
        f"simulator latency {args.latency_ms:g} ms\n"
    )
    print(
        "| endpoint | req/s | p50 ms | p99 ms | paired echo p99 ms | p99 / echo p99 "
        "| worker CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| echo (bare FastAPI, telemetry off), all {len(echo_runs)} runs "
        f"| {median([e.load.rate for e in echo_runs]):.0f} "
        f"| {median([e.load.p50_ms for e in echo_runs]):.1f} "
        f"| {median([e.load.p99_ms for e in echo_runs]):.1f} | | 1 "
        f"| {median([e.cpu_ms for e in echo_runs]):.2f} |"
    )
    for name, runs in pairs.items():
        ours = [o for o, _ in runs]
        ratio = median([o.load.p99_ms / e.load.p99_ms for o, e in runs])
        print(
            f"| `{name}` | {median([o.load.rate for o in ours]):.0f} "
            f"| {median([o.load.p50_ms for o in ours]):.1f} "
            f"| {median([o.load.p99_ms for o in ours]):.1f} "
            f"| {median([e.load.p99_ms for _, e in runs]):.1f} | {ratio:.1f} "
            f"| {median([o.cpu_ms for o in ours]):.2f} |"
        )


def report_telemetry(
    pairs: list[tuple[Measured, Measured]],
    per_call: dict[str, list[float]],
    checks: dict[str, float],
) -> None:
    if pairs:
        rate = median([d.load.rate / o.load.rate for o, d in pairs])
        cpu = median([d.cpu_ms / o.cpu_ms for o, d in pairs])
        print(f"\nFastAPI telemetry, echo over HTTP: medians of {len(pairs)} rounds\n")
        print("| echo app | req/s | p50 ms | p99 ms | worker CPU ms/req |")
        print("|---|---:|---:|---:|---:|")
        for label, runs in (
            ("hooks off", [o for o, _ in pairs]),
            ("FastAPI defaults", [d for _, d in pairs]),
        ):
            print(
                f"| {label} | {median([r.load.rate for r in runs]):.0f} "
                f"| {median([r.load.p50_ms for r in runs]):.1f} "
                f"| {median([r.load.p99_ms for r in runs]):.1f} "
                f"| {median([r.cpu_ms for r in runs]):.3f} |"
            )
        print(f"\ndefaults / off: throughput {rate:.3f}, worker CPU per request {cpu:.3f}")
    if per_call:
        off, default = per_call[ECHO], per_call[ECHO_DEFAULT]
        ratio = median([d / o for o, d in zip(off, default, strict=True)])
        extra = median([d - o for o, d in zip(off, default, strict=True)])
        print(
            f"in process (ASGI calls, no server), medians of {len(off)} rounds: "
            f"off {median(off):.1f} µs, defaults {median(default):.1f} µs per request; "
            f"per round defaults / off {ratio:.3f}, defaults - off {extra:+.1f} µs"
        )
    if checks:
        print(
            f"FastAPI's per-request telemetry check alone: off {checks[ECHO]:.2f} µs, "
            f"defaults {checks[ECHO_DEFAULT]:.2f} µs"
        )


def code_under_test() -> str:
    """HEAD and whether ``app/`` differs from it (others may edit the tree between runs)."""
    git = ["git", "-C", str(APP_ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "app"], capture_output=True, text=True
    )
    state = "app/ modified" if dirty.stdout.strip() else "app/ clean"
    return f"commit {head.stdout.strip() or '?'}, {state}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulator's delay")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--total-cap", type=float, default=1200.0, help="seconds, endpoints")
    parser.add_argument("--telemetry-rounds", type=int, default=10)
    parser.add_argument("--inproc-calls", type=int, default=2000)
    parser.add_argument("--inproc-rounds", type=int, default=41)
    parser.add_argument(
        "--only", nargs="+", default=[], help="measure only endpoints whose name has one of these"
    )
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tree = code_under_test()
    print(f"{command_line()}\nstarted {started}, {tree}, load average {os.getloadavg()}")
    run = Shape(args.concurrency, args.requests, args.time_cap)
    with (
        fresh_database("tail") as database,
        simulator(args.latency_ms) as sim,
        service(database, args.workers, sim.url) as ours,
        echo_server("off", args.workers) as echo_off,
        echo_server("default", args.workers) as echo_default,
    ):
        specs = prepare(settings, database, ours, sim)
        targets = {
            name: Target(ours.url, ours.pid, spec, status)
            for name, (spec, status) in specs.items()
            if not args.only or any(part in name for part in args.only)
        }
        echo_spec = request_file("GET", ECHO_PATH, [({}, "")])
        off = Target(echo_off.url, echo_off.pid, echo_spec, 200)
        default = Target(echo_default.url, echo_default.pid, echo_spec, 200)
        warm = Shape(args.concurrency, min(args.requests, 500), args.time_cap)
        for target in [*targets.values(), off, default]:  # pools, caches, prepared statements
            measure(target, warm)
        pairs = endpoint_rounds(targets, off, run, args.rounds, time.monotonic() + args.total_cap)
        telemetry = telemetry_rounds(off, default, run, args.telemetry_rounds)
    per_call = in_process(args.inproc_calls, args.inproc_rounds)
    checks = check_cost()
    finished = dt.datetime.now(dt.UTC).strftime("%H:%M UTC")
    print(f"\n{command_line()}\n{started} to {finished}, {tree}, load {os.getloadavg()}")
    report_endpoints(pairs, args)
    report_telemetry(telemetry, per_call, checks)


if __name__ == "__main__":
    main()

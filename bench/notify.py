"""Payment notify throughput and latency: the service against the raw-asyncpg reference.

For each worker count and each mix (``unique``: every notify pays a new order; ``dup30``: 30 %
of the requests repeat a body already sent), every round fires the same request list at the
service (``uvicorn app.main:app`` on PostgreSQL) and at ``bench/reference.py`` (same uvicorn,
its own database with the same schema), one after the other, alternating which goes first.
Orders are inserted with SQL before each round; bodies are correctly signed v2 notifies.
After each run the database must show exactly the expected paid orders and audit rows.
``--filler N`` first fills both databases alike with N orders of history and N notify audit rows
(``bench/filler.py``), to compare with an empty database.
``--webhook inline|separate`` configures a webhook endpoint on the service (every
``order.paid``), delivered to ``examples/webhook_receiver.py`` in its own process: each paid
notify then also writes its event and delivery row in its transaction. ``inline``: the
service's own worker posts them during the load, in the same process. ``separate``: the
service runs no worker (``WXPAY_WEBHOOK_POLL_INTERVAL_SECONDS=0``) and ``python -m app.cli
deliver-webhooks`` drains them after the run (a dedicated delivery process). Either way the
deliveries must drain (all delivered, one event per paid order) before the next run starts,
so delivery work is never hidden in another target's run.
``--baseline PATH`` adds a third target in the same rounds: the service as checked out at
PATH (e.g. ``git archive <commit> | tar -x -C PATH``), on its own database migrated by its own
alembic, to measure a change side by side on the same machine at the same time.

``--api-version v3`` measures WeChat Pay v3 instead: the service and the reference run with the
same generated v3 keys, and the bodies are v3 notifies (resource encrypted with the APIv3 key,
``Wechatpay-*`` headers signed with WeChat Pay's key), posted to ``/wechat/pay/v3/notify``.

Run: ``.venv/bin/python bench/notify.py`` (about 3 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from filler import Filler, fill
from harness import (
    APP_ROOT,
    NO_WECHAT,
    OBSERVABILITY,
    LoadResult,
    Server,
    V3Keys,
    baseline_service,
    baseline_targets,
    clean_env,
    command_line,
    fresh_database,
    median,
    observed_targets,
    pg_url,
    reference,
    run_load,
    service,
    version_env,
    webhook_receiver,
)
from loadgen import request_file

from app.config import Settings
from app.simulator.messages import payment_notify_body

NOTIFY = "/wechat/pay/notify"
FEE = 990
MIXES = {"unique": 0.0, "dup30": 0.3}
XML_HEADERS = {"Content-Type": "text/xml"}
Message = tuple[dict[str, str], str]  # headers, body


@dataclass(frozen=True, slots=True)
class Version:
    """What differs between v2 and v3 notifies: the path, the acknowledgement, the message."""

    name: str
    path: str
    ok_status: int
    keys: V3Keys | None
    wechat: Any  # WeChat Pay's signing keys (v3: ``WeChatPayKeys``), loaded once

    @classmethod
    def of(cls, name: str, key_dir: Path) -> Version:
        if name == "v2":
            return V2
        # v3 is imported only when asked for: bench/reads.py imports this module while it
        # measures an older checkout (BENCH_APP_ROOT) that may have no v3 at all.
        from app.simulator.v3envelope import WeChatPayKeys

        keys = V3Keys.under(key_dir)
        wechat = WeChatPayKeys(keys.material.config, Settings(_env_file=None).mch_id)
        return cls(name, "/wechat/pay/v3/notify", 204, keys, wechat)

    def message(self, settings: Settings, out_trade_no: str, transaction_id: str) -> Message:
        """A notify as WeChat sends it (PROTOCOL.md §5 for v2, §8.5 for v3)."""
        if self.keys is None or self.wechat is None:
            return XML_HEADERS, notify_body(settings, out_trade_no, transaction_id)
        from app.simulator.v3messages import notify_body as v3_notify_body
        from app.wechat.timefmt import to_rfc3339

        now = dt.datetime.now(dt.UTC)
        transaction = {
            "appid": settings.appid, "mchid": settings.mch_id, "out_trade_no": out_trade_no,
            "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功", "bank_type": "OTHERS", "success_time": to_rfc3339(now),
            "payer": {"openid": "o-bench"},
            "amount": {"total": FEE, "payer_total": FEE, "currency": "CNY",
                       "payer_currency": "CNY"},
        }  # fmt: skip
        body = v3_notify_body(
            event_type="TRANSACTION.SUCCESS", summary="支付成功", original_type="transaction",
            resource=transaction, api_v3_key=self.keys.material.config.api_v3_key, now=now,
        )  # fmt: skip
        headers = {"Content-Type": "application/json", **self.wechat.signature_headers(body)}
        return headers, body.decode()


V2 = Version("v2", NOTIFY, 200, None, None)


@dataclass(frozen=True, slots=True)
class Batch:
    """One round's orders (the same numbers in both databases) and its request list."""

    prefix: str
    numbers: list[str]
    requests: list[Message]


async def seed(database: str) -> None:
    """One user and one product, which every benchmark order points at."""
    conn = await asyncpg.connect(pg_url(database))
    try:
        await conn.execute(
            "INSERT INTO users (openid, session_key_sealed, created_at, updated_at) "
            "VALUES ('o-bench', 'x', now(), now());"
            "INSERT INTO products (name, description, price_fen, active, created_at) "
            f"VALUES ('p', 'shop-goods', {FEE}, true, now())"
        )
    finally:
        await conn.close()


async def insert_orders(database: str, numbers: list[str], version: str = "v2") -> None:
    now = dt.datetime.now(dt.UTC)
    user_id, product_id = 1, 1
    sign_type = "RSA" if version == "v3" else "MD5"
    records = [
        (no, user_id, "o-bench", product_id, 1, FEE, "shop-goods", "NOTPAY", sign_type,
         "127.0.0.1", now + dt.timedelta(minutes=30), now, now, version)
        for no in numbers
    ]  # fmt: skip
    columns = [
        "out_trade_no", "user_id", "openid", "product_id", "quantity", "total_fee",
        "description", "status", "sign_type", "client_ip", "time_expire", "created_at",
        "updated_at", "api_version",
    ]  # fmt: skip
    conn = await asyncpg.connect(pg_url(database))
    try:
        await conn.copy_records_to_table("orders", records=records, columns=columns)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Run:
    settings: Settings
    version: Version
    databases: dict[str, str]
    concurrency: int
    time_cap: float
    webhook: str | None = None  # "inline" or "separate"
    baseline: str | None = None  # a checkout measured beside the service


def notify_body(settings: Settings, out_trade_no: str, transaction_id: str) -> str:
    """A notify as WeChat signs it (PROTOCOL.md §5)."""
    body = payment_notify_body(
        settings, out_trade_no=out_trade_no, transaction_id=transaction_id, total_fee=FEE
    )
    return body.decode()


def make_batch(
    version: Version, settings: Settings, prefix: str, count: int, duplicates: float
) -> Batch:
    """``count`` requests: unique notifies, with ``duplicates`` of them repeating an earlier
    message sent at least 200 requests before (so it has been answered)."""
    rng = random.Random(prefix)
    unique = count - round(count * duplicates)
    numbers = [f"{prefix}{i:08d}" for i in range(unique)]
    bodies = [version.message(settings, no, f"42{no}") for no in numbers]
    requests: list[Message] = []
    sent = 0
    while len(requests) < count:
        repeat = sent > 200 and (sent >= unique or rng.random() < duplicates)
        if repeat:
            requests.append(bodies[rng.randrange(0, sent - 200)])
        else:
            requests.append(bodies[sent])
            sent += 1
    return Batch(prefix, numbers, requests)


async def check_outcome(database: str, batch: Batch) -> None:
    """Every order of the batch paid exactly once, one audit row per request."""
    conn = await asyncpg.connect(pg_url(database))
    try:
        like = batch.prefix + "%"
        paid = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE out_trade_no LIKE $1 AND status = 'SUCCESS'", like
        )
        audited = await conn.fetchval(
            "SELECT count(*) FROM payment_notifies WHERE out_trade_no LIKE $1", like
        )
    finally:
        await conn.close()
    if (paid, audited) != (len(batch.numbers), len(batch.requests)):
        raise AssertionError(
            f"{database} {batch.prefix}: paid {paid}/{len(batch.numbers)}, "
            f"audited {audited}/{len(batch.requests)}"
        )


async def drain_deliveries(
    database: str, batch: Batch, separate: bool, within: float = 180
) -> float:
    """Wait until every delivery is made (``separate``: making them with the CLI); check one
    ``order.paid`` event per paid order of the batch. Seconds waited after the load ended."""
    started = time.monotonic()
    conn = await asyncpg.connect(pg_url(database))
    try:
        while await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL"
        ):
            if time.monotonic() - started > within:
                raise AssertionError(f"{database}: deliveries not drained in {within} s")
            if separate:
                deliver_with_cli(database)
            else:
                await asyncio.sleep(0.2)
        events = await conn.fetchval(
            "SELECT count(*) FROM outbox_events e JOIN orders o ON o.id = e.order_id "
            "WHERE o.out_trade_no LIKE $1 AND e.type = 'order.paid'",
            batch.prefix + "%",
        )
    finally:
        await conn.close()
    if events != len(batch.numbers):
        raise AssertionError(f"{batch.prefix}: {events} events for {len(batch.numbers)} orders")
    return time.monotonic() - started


def deliver_with_cli(database: str) -> None:
    env = {**clean_env(), "WXPAY_DATABASE_URL": pg_url(database, driver="asyncpg")}
    subprocess.run(
        [sys.executable, "-m", "app.cli", "deliver-webhooks"],
        cwd=APP_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def add_endpoint(service_url: str) -> str:
    """Register a placeholder endpoint (every ``order.paid``); its secret."""
    body = json.dumps({"url": "http://127.0.0.1:9/webhooks", "events": ["order.paid"]})
    request = urllib.request.Request(  # noqa: S310 (loopback, our own service)
        service_url + "/api/v1/admin/webhooks",
        data=body.encode(),
        headers={"Content-Type": "application/json", "X-Admin-Token": "dev-admin-token"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        created: dict[str, str] = json.loads(reply.read())
    return created["secret"] + "|" + str(created["id"])


def point_endpoint(service_url: str, endpoint_id: str, url: str) -> None:
    request = urllib.request.Request(  # noqa: S310
        f"{service_url}/api/v1/admin/webhooks/{endpoint_id}",
        data=json.dumps({"url": url}).encode(),
        headers={"Content-Type": "application/json", "X-Admin-Token": "dev-admin-token"},
        method="PATCH",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def measure(
    run: Run, servers: dict[str, Server], batch: Batch, order: list[str]
) -> dict[str, LoadResult]:
    for database in run.databases.values():
        asyncio.run(insert_orders(database, batch.numbers, run.version.name))
    spec = request_file("POST", run.version.path, batch.requests)
    results: dict[str, LoadResult] = {}
    for target in order:
        results[target] = run_load(
            servers[target].url,
            spec,
            concurrency=run.concurrency,
            count=len(batch.requests),
            time_cap=run.time_cap,
            ok_status=run.version.ok_status,
            server_pid=servers[target].pid,
        )
        if results[target].ok == len(batch.requests):
            asyncio.run(check_outcome(run.databases[target], batch))
        if run.webhook and target == "ours":
            separate = run.webhook == "separate"
            drained = asyncio.run(drain_deliveries(run.databases["ours"], batch, separate))
            print(f"    deliveries drained {drained:.1f} s after the load")
    return results


Key = tuple[int, str, str]  # workers, mix, target


def _server(
    run: Run, target: str, workers: int, env: dict[str, str]
) -> AbstractContextManager[Server]:
    """One target's server: the reference, the service (observed or not), or the baseline
    checkout; with ``--webhook separate`` the service runs no delivery worker of its own."""
    if target == "reference":
        return reference(run.databases[target], workers, extra=env)
    if target.startswith("baseline"):
        assert run.baseline is not None
        database = run.databases[target]
        return baseline_service(Path(run.baseline), target, database, workers, NO_WECHAT, env)
    no_worker = {"WXPAY_WEBHOOK_POLL_INTERVAL_SECONDS": "0"} if run.webhook == "separate" else {}
    return service(
        run.databases[target], workers, extra={**env, **no_worker}, observed=target == "observed"
    )


def bench_workers(
    run: Run, workers: int, rounds: int, count: int, results: dict[Key, list[LoadResult]]
) -> None:
    env = version_env(run.version.keys)
    with ExitStack() as stack:
        running = {
            target: stack.enter_context(_server(run, target, workers, env))
            for target in run.databases
        }
        if run.webhook:
            ours = running["ours"].url
            secret, endpoint_id = add_endpoint(ours).split("|")
            receiver = stack.enter_context(webhook_receiver(secret))
            point_endpoint(ours, endpoint_id, receiver.url + "/webhooks")
        targets = list(running)
        warmup = make_batch(run.version, run.settings, f"W{workers}", min(count, 1000), 0.0)
        measure(run, running, warmup, targets)
        for mix, duplicates in MIXES.items():
            for index in range(rounds):
                prefix = f"N{workers}{mix[0]}{index}"
                batch = make_batch(run.version, run.settings, prefix, count, duplicates)
                # Each target goes first in turn.
                order = targets[index % len(targets) :] + targets[: index % len(targets)]
                for target, result in measure(run, running, batch, order).items():
                    results[(workers, mix, target)].append(result)
                    print(f"  {workers}w {mix:6} round {index + 1} {target:9} {_line(result)}")


def _line(result: LoadResult) -> str:
    bad = {k: v for k, v in result.statuses.items() if k not in ("200", "204")}
    errors = f" errors={bad}" if bad else ""
    latency = f"p50 {result.p50_ms:6.1f} ms p99 {result.p99_ms:6.1f} ms"
    return f"{result.rate:7.0f}/s {latency} cpu {result.cpu_ms_per_ok:.2f} ms/req{errors}"


def report(results: dict[Key, list[LoadResult]], rounds: int) -> None:
    print(f"\n{command_line()}\nmedians of {rounds} rounds; ratios: medians of per-round ratios\n")
    print(
        "| workers | mix | service | req/s | ref req/s | / ref | p50 / p99 ms | ref p50 / p99 ms "
        "| CPU ms/req | ref CPU ms/req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for workers, mix, target in sorted(results):
        if target == "reference":
            continue
        ours, ref = results[(workers, mix, target)], results[(workers, mix, "reference")]
        print(
            f"| {workers} | {mix} | {target} | {median([r.rate for r in ours]):.0f} "
            f"| {median([r.rate for r in ref]):.0f} | {_ratio(ours, ref):.2f} "
            f"| {_latency(ours)} | {_latency(ref)} | {_cpu(ours)} | {_cpu(ref)} |"
        )
    for workers, mix, target in sorted(results):
        if target == "observed" and (workers, mix, "ours") in results:
            observed, ours = results[(workers, mix, target)], results[(workers, mix, "ours")]
            cpu = median(
                [o.cpu_ms_per_ok / b.cpu_ms_per_ok for o, b in zip(observed, ours, strict=True)]
            )
            print(
                f"observed / ours, {workers} worker(s), {mix}: "
                f"rate {_ratio(observed, ours):.2f}, CPU per request {cpu:.2f}"
            )


def _cpu(results: list[LoadResult]) -> str:
    return f"{median([r.cpu_ms_per_ok for r in results]):.2f}"


def _ratio(ours: list[LoadResult], ref: list[LoadResult]) -> float:
    return median([o.rate / r.rate for o, r in zip(ours, ref, strict=True)])


def _latency(results: list[LoadResult]) -> str:
    return f"{median([r.p50_ms for r in results]):.1f} / {median([r.p99_ms for r in results]):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--filler", type=int, default=0, help="orders of history in each database")
    parser.add_argument("--api-version", choices=["v2", "v3"], default="v2")
    parser.add_argument(
        "--observability",
        choices=OBSERVABILITY,
        default="off",
        help="the service without metrics and JSON logs, with them, or both side by side",
    )
    parser.add_argument(
        "--webhook",
        choices=["inline", "separate"],
        help="a webhook endpoint on the service, delivered by its own worker or by the CLI",
    )
    parser.add_argument("--baseline", help="a checkout of the service to measure beside it")
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    results: dict[Key, list[LoadResult]] = defaultdict(list)
    with ExitStack() as stack:
        key_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="wxpay-bench-v3-"))
        version = Version.of(args.api_version, Path(key_dir))
        targets = [*observed_targets(args.observability), "reference"]
        databases = {t: stack.enter_context(fresh_database(t[:4])) for t in targets}
        if args.baseline:  # another checkout, on the schema it expects, observed as ours is
            for target in baseline_targets(args.observability):
                base = fresh_database("base", app_root=Path(args.baseline))
                databases[target] = stack.enter_context(base)
        for database in databases.values():
            asyncio.run(seed(database))
            if args.filler:
                filled = asyncio.run(fill(database, Filler(args.filler, args.filler, due=0)))
                print(f"  {database}: {args.filler:,} filler orders in {filled.seconds:.0f} s")
        run = Run(
            settings, version, databases, args.concurrency, args.time_cap, args.webhook,
            args.baseline,
        )  # fmt: skip
        for workers in args.workers:
            bench_workers(run, workers, args.rounds, args.requests, results)
    report(results, args.rounds)


if __name__ == "__main__":
    main()

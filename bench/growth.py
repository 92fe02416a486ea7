"""Cost as the data grows: the sweep, a user's orders page and the admin review list at N rows.

Makes a fresh PostgreSQL database (``alembic upgrade head``), fills it in SQL (``bench/filler.py``:
N orders over N/10 users, a few hundred flagged for review, 1,000 unpaid orders due for the
sweep, N notify audit rows), VACUUM ANALYZEs it, then:

- prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the sweep claim, the heaviest user's first orders page
  and the admin review list, each with the SQL and parameters the app's own repository methods
  send (recorded on the way to the driver, see ``app_statements``), run ``--repeat`` times in
  transactions that are rolled back; flags any plan with a sequential scan of ``orders``;
- times ``--writes`` create-order writes (the priced insert and the prepay update, through the
  app's asyncpg repository) and counts how many of the updates PostgreSQL made HOT;
- runs two real sweep passes (``sweep_once``, batch 1,000) over the due orders, the first right
  after a CHECKPOINT, WeChat played by the simulator in its own process (it has never heard of
  these orders, so each one is queried, found expired, closed at WeChat and closed here: the
  most database work an unpaid order costs a pass), and reports each pass's database time as
  PostgreSQL counts it (``pg_stat_database.active_time`` of the benchmark database), the CPU
  time of the backends that served it, and the statements' round trips seen from the client.

With ``--from-revision REV`` the filled database is first migrated down to REV (timed) and
measured, then migrated back to head (timed: how long the new revisions hold their locks on a
table this size) and measured again. Exits non-zero if, at head, a plan scans ``orders``
sequentially, fewer than half the prepay updates are HOT, or a pass takes ``--sweep-limit``
seconds of database time or more.

Run: ``.venv/bin/python bench/growth.py`` (2–3 minutes at 1,000,000 orders with
``--from-revision``; needs the PostgreSQL superuser for CHECKPOINT, and to run on the database's
machine for the backends' CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg
from filler import Filled, Filler, fill, reset_due
from harness import (
    ROOT,
    alembic,
    command_line,
    cpu_seconds,
    fresh_database,
    pg_url,
    simulator,
)
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.db import create_engine, utcnow
from app.models import load_all_models
from app.orders.numbers import new_out_trade_no
from app.orders.repository import OrderRepository
from app.orders.states import OrderStatus
from app.runtime import build_runtime
from app.sql import AsyncpgExecutor, PgConnection, SqlAlchemyExecutor, StatementCache
from app.sweep import LEASE_SECONDS, SweepReport
from app.uow import SqlAlchemyDatabase

TABLE_SCAN = re.compile(r"Seq Scan on orders\b")
EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")
PAGE_SIZE = 20  # GET /api/v1/orders default
REVIEW_LIMIT = 100  # GET /api/v1/admin/orders/review default


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement as the app sends it: SQL in the driver's paramstyle, and its values."""

    name: str
    sql: str
    params: tuple[Any, ...]


# ---------------------------------------------------------------------------------------------
# The app's data layer. Everything this script knows about how the app queries and sweeps
# orders is in this section: when the data layer changes, update it here, and only here.
# ---------------------------------------------------------------------------------------------


def app_settings(database_url: str, wechat_url: str, batch: int) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        pay_api_base=wechat_url,
        miniprogram_api_base=wechat_url,
        simulator_mount=False,
        sweep_batch_size=batch,
        sweep_interval_seconds=0,
    )


async def app_statements(engine: AsyncEngine, settings: Settings, user_id: int) -> list[Statement]:
    """The three reads, exactly as the app's repository sends them (rolled back afterwards)."""
    due = utcnow() - dt.timedelta(minutes=settings.reconcile_after_minutes)
    batch = settings.sweep_batch_size
    calls: dict[str, Callable[[OrderRepository], Awaitable[object]]] = {
        "sweep claim": lambda repo: repo.claim_for_sweep(due, LEASE_SECONDS, batch),
        "orders page": lambda repo: repo.list_for_user(user_id, PAGE_SIZE, 0),
        "review list": lambda repo: repo.needing_review(REVIEW_LIMIT),
    }
    found: list[Statement] = []
    async with engine.connect() as conn:
        for name, call in calls.items():
            async with conn.begin() as tx:
                with recording(conn) as sent:
                    await call(OrderRepository(SqlAlchemyExecutor(conn), fold_writes=True))
                await tx.rollback()
            if len(sent) != 1:
                raise RuntimeError(f"{name}: expected one statement, the app sent {len(sent)}")
            found.append(Statement(name, *sent[0]))
    return found


async def app_sweep_pass(engine: AsyncEngine, settings: Settings) -> SweepReport:
    """One pass of the app's own sweep, built by its composition root. It runs on the
    SQLAlchemy driver over ``engine`` (the same statements the service runs on asyncpg, see
    tests/test_data_layer.py) so that its round trips can be timed; database time is
    PostgreSQL's own count either way."""
    async with AsyncExitStack() as stack:
        runtime = await build_runtime(settings, stack, db=SqlAlchemyDatabase(engine))
        return await runtime.sweeper.sweep_once()


_COMPILED = StatementCache()  # as the service's database keeps it: each statement compiled once


async def app_create_writes(
    conn: PgConnection, settings: Settings, user: tuple[int, str], product_id: int
) -> tuple[float, float]:
    """Create order's two writes on PostgreSQL, as ``OrderService`` makes them around the
    WeChat call: the priced insert, then the prepay update. Seconds each took."""
    repo = OrderRepository(AsyncpgExecutor(conn, _COMPILED), fold_writes=True)
    now = utcnow()
    values = {
        "out_trade_no": new_out_trade_no(now),
        "user_id": user[0],
        "openid": user[1],
        "product_id": product_id,
        "quantity": 1,
        "status": OrderStatus.NOTPAY.value,
        "sign_type": "MD5",
        "api_version": "v2",
        "client_ip": "127.0.0.1",
        "idempotency_key": None,
        "time_expire": now + dt.timedelta(minutes=settings.order_ttl_minutes),
    }
    started = time.perf_counter()
    order = await repo.insert_priced(values, max_fee=10**9)
    inserted = time.perf_counter()
    assert order is not None, "the filler product is not on sale"
    await repo.set_prepay(order.out_trade_no, "wx" + "0" * 34, now + dt.timedelta(hours=2), None)
    return inserted - started, time.perf_counter() - inserted


# ---------------------------------------------------------------------------------------------


@contextmanager
def recording(conn: AsyncConnection) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every statement ``conn`` hands the driver while open, with its parameters."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def record(_c: Connection, _cur: Any, sql: str, params: Any, *_: Any) -> None:
        sent.append((sql, tuple(params)))

    event.listen(conn.sync_connection, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(conn.sync_connection, "before_cursor_execute", record)


@dataclass(slots=True)
class Plan:
    statement: Statement
    text: str
    times_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def scans_orders(self) -> bool:
        return bool(TABLE_SCAN.search(self.text))


async def explain(engine: AsyncEngine, statement: Statement, repeat: int) -> Plan:
    """``EXPLAIN (ANALYZE, BUFFERS)`` ``repeat`` times, each in a transaction rolled back (the
    claim really leases rows); the last plan is kept, warm like a steady service's."""
    plan = Plan(statement, "", [])
    async with engine.connect() as conn:
        for _ in range(repeat):
            async with conn.begin() as tx:
                rows = await conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, statement.params
                )
                plan.text = "\n".join(str(row[0]) for row in rows)
                await tx.rollback()
            found = EXECUTION.search(plan.text)
            assert found is not None, plan.text
            plan.times_ms.append(float(found.group(1)))
    return plan


@dataclass(slots=True)
class ClientTimes:
    """Round trips of each statement shape, from handing it to the driver to its last row."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def attach(self, engine: AsyncEngine) -> None:
        def before(conn: Connection, *_: Any) -> None:
            conn.info.setdefault("started", []).append(time.perf_counter())

        def after(conn: Connection, _cur: Any, sql: str, *_: Any) -> None:
            elapsed = time.perf_counter() - conn.info["started"].pop()
            self.seconds[_shape(sql)].append(elapsed)

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)

    @property
    def total(self) -> float:
        return sum(sum(times) for times in self.seconds.values())


@dataclass(slots=True)
class BackendCpu:
    """CPU time of the PostgreSQL processes serving an engine's connections (same machine):
    the database's own work, without the waits for a core or for the disk."""

    at_connect: dict[int, float] = field(default_factory=dict)

    def attach(self, engine: AsyncEngine) -> None:
        def connected(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
            cursor.close()
            self.at_connect[pid] = cpu_seconds(pid)

        event.listen(engine.sync_engine, "connect", connected)

    def seconds(self) -> float:
        """Since each connected; call while the connections are still open."""
        return sum(cpu_seconds(pid) - start for pid, start in self.at_connect.items())


def _shape(sql: str) -> str:
    words = " ".join(sql.split())
    head = re.sub(r"SELECT .*? FROM", "SELECT … FROM", words)
    return head[:90]


@dataclass(frozen=True, slots=True)
class Run:
    database: str
    filled: Filled
    settings: Settings
    repeat: int
    writes: int


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """PostgreSQL's cumulative counters: the benchmark database's closed sessions, and the
    whole cluster's WAL and checkpoints (nothing else should be writing during a pass)."""

    active_s: float
    idle_in_transaction_s: float
    wal_bytes: int
    wal_fpi: int
    wal_syncs: int
    checkpoints: int

    def __sub__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            *(getattr(self, f.name) - getattr(other, f.name) for f in fields(self))
        )


async def sessions_ended(conn: asyncpg.Connection, database: str) -> None:
    """Wait (up to 30 s) until no other session is open on ``database``: PostgreSQL adds a
    session's times and counts to its statistics when the session ends."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        open_sessions = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            database,
        )
        if open_sessions == 0:
            return
        await asyncio.sleep(0.1)


async def server_counters(database: str) -> ServerCounters:
    # Read from another database: a session on this one would add its own time.
    conn = await asyncpg.connect(pg_url("postgres"))
    try:
        await sessions_ended(conn, database)
        row = await conn.fetchrow(
            "SELECT d.active_time / 1000, d.idle_in_transaction_time / 1000, w.wal_bytes::bigint,"
            " w.wal_fpi, w.wal_sync, b.checkpoints_timed + b.checkpoints_req"
            " FROM pg_stat_database d, pg_stat_wal w, pg_stat_bgwriter b WHERE d.datname = $1",
            database,
        )
    finally:
        await conn.close()
    assert row is not None, f"no statistics for {database}"
    return ServerCounters(*row)


@dataclass(frozen=True, slots=True)
class PassResult:
    label: str
    report: SweepReport
    wall_s: float
    server: ServerCounters
    backend_cpu_s: float
    client: ClientTimes
    load: float  # the machine's 1-minute load average after the pass


async def sweep_pass(label: str, run: Run) -> PassResult:
    """One sweep pass, then the due orders put back as they were."""
    before = await server_counters(run.database)
    engine = create_engine(run.settings.database_url)
    client, backends = ClientTimes(), BackendCpu()
    client.attach(engine)
    backends.attach(engine)
    try:
        started = time.perf_counter()
        report = await app_sweep_pass(engine, run.settings)
        wall = time.perf_counter() - started
        cpu = backends.seconds()
    finally:
        await engine.dispose()
    server = await server_counters(run.database) - before
    await reset_due(run.database, run.filled)
    return PassResult(label, report, wall, server, cpu, client, os.getloadavg()[0])


@dataclass(frozen=True, slots=True)
class WritesResult:
    insert_s: list[float]
    update_s: list[float]
    updates: int
    hot_updates: int

    @property
    def hot_share(self) -> float:
        return self.hot_updates / self.updates if self.updates else float("nan")


async def create_writes(run: Run) -> WritesResult:
    """``run.writes`` create orders' writes, one after the other on one pooled connection, and
    how many of the prepay updates were HOT (no index entries written: only possible when no
    indexed column changes and the page has room), then the new orders removed."""
    before = await orders_updates(run.database)
    pool = await asyncpg.create_pool(pg_url(run.database), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT u.id, u.openid, (SELECT max(id) FROM products) AS product"
                " FROM users u WHERE u.id = $1",
                run.filled.heaviest_user_id,
            )
            assert row is not None
            user = (row["id"], row["openid"])
            times = [
                await app_create_writes(conn, run.settings, user, row["product"])
                for _ in range(run.writes)
            ]
    finally:
        await pool.close()
    after = await orders_updates(run.database)
    await reset_due(run.database, run.filled)
    inserts, updates = zip(*times, strict=True) if times else ((), ())
    return WritesResult(list(inserts), list(updates), after[0] - before[0], after[1] - before[1])


async def orders_updates(database: str) -> tuple[int, int]:
    """(updates, HOT updates) of ``orders`` so far."""
    conn = await asyncpg.connect(pg_url(database))
    try:
        await sessions_ended(conn, database)
        row = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'orders'"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["n_tup_upd"], row["n_tup_hot_upd"]


async def checkpoint() -> None:
    conn = await asyncpg.connect(pg_url("postgres"))
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Measurement:
    label: str
    plans: list[Plan]
    writes: WritesResult
    passes: list[PassResult]


async def measure(label: str, run: Run) -> Measurement:
    engine = create_engine(run.settings.database_url)
    try:
        statements = await app_statements(engine, run.settings, run.filled.heaviest_user_id)
        plans = [await explain(engine, s, run.repeat) for s in statements]
    finally:
        await engine.dispose()
    for plan in plans:
        print_plan(label, plan)
    writes = await create_writes(run)
    print_writes(label, writes)
    # The first change to a page after a checkpoint logs the whole page, and the bulk load
    # leaves minutes of dirty pages for the checkpointer to write, competing with the pass's
    # commit flushes: start each state from a checkpoint, then measure once more right after.
    await checkpoint()
    passes = [await sweep_pass(name, run) for name in ("after CHECKPOINT", "again")]
    for result in passes:
        print_pass(label, result)
    return Measurement(label, plans, writes, passes)


def print_plan(label: str, plan: Plan) -> None:
    uses = "SEQUENTIAL SCAN of orders" if plan.scans_orders else "no sequential scan of orders"
    runs = ", ".join(f"{t:.2f}" for t in plan.times_ms)
    print(f"\n== {label}: {plan.statement.name} ({uses}); execution ms: {runs}")
    print(plan.statement.sql)
    print(f"-- parameters: {plan.statement.params!r}")
    print(plan.text)


def print_writes(label: str, writes: WritesResult) -> None:
    print(
        f"\n== {label}: {len(writes.insert_s)} create-order writes: insert "
        f"{_p50_p99(writes.insert_s)} ms, prepay update {_p50_p99(writes.update_s)} ms "
        f"(p50 / p99); {writes.hot_updates} of {writes.updates} updates HOT"
    )


def _p50_p99(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{1000 * statistics.median(seconds):.3f} / {1000 * p99:.3f}"


def print_pass(label: str, result: PassResult) -> None:
    report, server = result.report, result.server
    print(f"\n== {label}: one sweep pass, {result.label}")
    print(
        f"claimed {report.claimed}, closed {report.closed}, paid {report.paid}, "
        f"failed {report.failed}; wall {result.wall_s:.2f} s; database active "
        f"{server.active_s:.3f} s, backend CPU {result.backend_cpu_s:.3f} s, idle in "
        f"transaction {server.idle_in_transaction_s:.3f} s; "
        f"client round trips {result.client.total:.3f} s; WAL {server.wal_bytes / 1e6:.1f} MB, "
        f"{server.wal_fpi} full-page images, {server.wal_syncs} flushes, "
        f"{server.checkpoints} checkpoints; load average {result.load:.1f}"
    )
    for shape, times in sorted(result.client.seconds.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {len(times):5} × {1000 * statistics.median(times):6.2f} ms median "
              f"= {sum(times):6.3f} s  {shape}")  # fmt: skip


def timed_alembic(database: str, command: str, revision: str) -> float:
    started = time.monotonic()
    alembic(database, command, revision, timeout=600)
    return time.monotonic() - started


def summary(measurements: list[Measurement], migrations: dict[str, float]) -> None:
    print(f"\n{command_line()}\n")
    print("| schema | statement | plan | execution ms (median) | runs |")
    print("|---|---|---|---:|---|")
    for m in measurements:
        for p in m.plans:
            plan = "**Seq Scan on orders**" if p.scans_orders else "index"
            runs = " / ".join(f"{t:.2f}" for t in p.times_ms)
            print(f"| {m.label} | {p.statement.name} | {plan} | {p.median_ms:.2f} | {runs} |")
    print("\n| schema | sweep pass | claimed / closed | DB active s | backend CPU s "
          "| client round trips s | wall s | WAL MB | full-page images | load |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in measurements:
        for sweep in m.passes:
            r, c = sweep.report, sweep.server
            print(f"| {m.label} | {sweep.label} | {r.claimed} / {r.closed} | {c.active_s:.3f} "
                  f"| {sweep.backend_cpu_s:.3f} | {sweep.client.total:.3f} | {sweep.wall_s:.2f} "
                  f"| {c.wal_bytes / 1e6:.1f} | {c.wal_fpi} | {sweep.load:.1f} |")  # fmt: skip
    print("\n| schema | create-order writes | insert p50 / p99 ms | prepay update p50 / p99 ms "
          "| HOT updates |")  # fmt: skip
    print("|---|---:|---|---|---:|")
    for m in measurements:
        w = m.writes
        print(f"| {m.label} | {len(w.insert_s)} | {_p50_p99(w.insert_s)} "
              f"| {_p50_p99(w.update_s)} | {w.hot_updates} / {w.updates} |")  # fmt: skip
    for step, seconds in migrations.items():
        print(f"\n{step}: {seconds:.1f} s (alembic process included)")


def problems(final: Measurement, sweep_limit: float) -> list[str]:
    found = [f"{p.statement.name} scans orders" for p in final.plans if p.scans_orders]
    if final.writes.hot_share < 0.5:
        found.append(f"only {final.writes.hot_share:.0%} of the prepay updates were HOT")
    for p in final.passes:
        if p.server.active_s >= sweep_limit:
            found.append(f"sweep pass {p.label} took {p.server.active_s:.2f} s of database time")
        if p.report.claimed != p.report.closed:
            found.append(f"sweep pass {p.label} did not close every order it claimed")
    return found


async def _fill(database: str, filler: Filler) -> Filled:
    filled = await fill(database, filler)
    print(
        f"filled {filler.orders:,} orders + {filler.due:,} due, {filler.notifies:,} notifies "
        f"in {filled.seconds:.0f} s; heaviest user {filled.heaviest_user_id} has "
        f"{filled.heaviest_user_orders:,} orders"
    )
    return filled


def revision() -> str:
    """The commit measured, and whether app/ or alembic/ differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "app", "alembic"], capture_output=True, text=True
    )
    dirty = " + uncommitted changes in app/ or alembic/" if changed.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{dirty}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--notifies", type=int, help="audit rows (default: as many as orders)")
    parser.add_argument("--due", type=int, default=1000, help="orders due for the sweep (≤1000)")
    parser.add_argument("--repeat", type=int, default=5, help="EXPLAIN ANALYZE runs each")
    parser.add_argument("--from-revision", help="measure at this revision first, then at head")
    parser.add_argument("--sweep-limit", type=float, default=2.0, help="seconds of DB time")
    parser.add_argument("--writes", type=int, default=2000, help="create-order writes timed")
    args = parser.parse_args()
    load_all_models()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {revision()}, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    filler = Filler(args.orders, args.notifies or args.orders, args.due)
    measurements: list[Measurement] = []
    migrations: dict[str, float] = {}
    with fresh_database("growth") as database, simulator(0) as sim:
        filled = asyncio.run(_fill(database, filler))
        settings = app_settings(pg_url(database, driver="asyncpg"), sim.url, args.due)
        run = Run(database, filled, settings, args.repeat, args.writes)
        if args.from_revision:
            migrations[f"downgrade to {args.from_revision}"] = timed_alembic(
                database, "downgrade", args.from_revision
            )
            measurements.append(asyncio.run(measure(f"at {args.from_revision}", run)))
            migrations["upgrade to head"] = timed_alembic(database, "upgrade", "head")
        measurements.append(asyncio.run(measure("at head", run)))
    summary(measurements, migrations)
    found = problems(measurements[-1], args.sweep_limit)
    print("\n" + ("FAIL: " + "; ".join(found) if found else "OK: no check failed at head"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

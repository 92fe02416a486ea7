"""History for growth benchmarks: filler orders, their users, events and notify audit rows.

Every row is generated inside PostgreSQL (``INSERT ... SELECT ... FROM generate_series``, one
statement per table), so a million orders take a minute, not the far longer a row-by-row client
would. Values are pure functions of the series index (``hashint4``), so every run fills the same
data. Ids are given explicitly, after any rows already there, and the sequences are moved past
them: the benchmarks seed their own users and products first and insert more orders after.

Shape, for ``orders`` = N:

- N orders created over the two years before now (ids in creation order, as in production),
  72 % SUCCESS, 25 % CLOSED (by the sweep: leased, closed after 31 min), 3 % REFUND; every
  ``N // review`` th one flagged for review; none payable, so the sweep never claims them.
- N // 10 users, skewed: user k has about N / (2 * sqrt(k * N / 10)) orders, so the heaviest
  user has ~3,000 of a million and three quarters of the users 5–10.
- ``due`` NOTPAY orders created 35–95 min ago (past ``time_expire``): what one sweep pass claims.
- One ``PAID`` order event per paid order, as the notify writes it.
- ``notifies`` audit rows, one per filler order in turn (a second round repeats as duplicates),
  ``raw`` a JSON body of the size the notify stores (~500 bytes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
from harness import pg_url

# Filler out_trade_no: the app's shape (``yyyyMMddHHmmss`` + 12 characters, 26 in all) with a
# letter no generated benchmark prefix uses after the time, so nothing collides.
_OUT_TRADE_NO = (
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')"
    " || '{tag}' || lpad(g::text, 11, '0')"
)
# The openid of filler user number ``u`` (``_insert_users`` numbers them from 0).
_OPENID = "'oFill' || lpad(u::text, 23, '0')"
# A uniform number in [0, 1) from the series index and a salt, the same on every run.
_UNIFORM = "((hashint4(g * 7 + {salt})::bigint + 2147483648) / 4294967296.0)"


@dataclass(frozen=True, slots=True)
class Filler:
    orders: int
    notifies: int
    due: int = 1000
    review_count: int = 300
    price_fen: int = 990


@dataclass(frozen=True, slots=True)
class Filled:
    """Where the filler went: first ids, the heaviest user and how long it took."""

    first_order_id: int
    first_due_id: int
    last_order_id: int
    heaviest_user_id: int
    heaviest_user_orders: int
    seconds: float


async def fill(database: str, filler: Filler) -> Filled:
    """Insert ``filler`` into ``database`` (migrated, possibly seeded), VACUUM ANALYZE it and
    CHECKPOINT (which needs a superuser, as the benchmarks' ``postgres`` is)."""
    started = time.monotonic()
    conn = await asyncpg.connect(pg_url(database))
    try:
        user0 = await _next_id(conn, "users")
        product = await _next_id(conn, "products")
        order0 = await _next_id(conn, "orders")
        users = max(1, filler.orders // 10)
        async with conn.transaction():
            await _insert_users(conn, user0, users)
            await conn.execute(
                "INSERT INTO products (id, name, description, price_fen, active, created_at)"
                " VALUES ($1, 'filler', 'shop-goods', $2, true, now() - interval '3 years')",
                product,
                filler.price_fen,
            )
            await _insert_orders(conn, filler, order0, user0, users, product)
            await _insert_due(conn, filler, order0 + filler.orders, user0, users, product)
            await _insert_events(conn, order0, order0 + filler.orders - 1)
            await _insert_notifies(conn, filler, order0)
            for table in ("users", "products", "orders", "order_events", "payment_notifies"):
                await _move_sequence(conn, table)
        # Hint bits, visibility map and statistics as autovacuum would leave them, and the
        # bulk load's dirty pages written out, so the first measurement does not pay for them
        # (the checkpointer writing a gigabyte slowed every commit flush for minutes).
        await conn.execute(
            "VACUUM (ANALYZE) users, products, orders, order_events, payment_notifies"
        )
        await conn.execute("CHECKPOINT")
        heaviest = await conn.fetchrow(
            "SELECT user_id, count(*) AS n FROM orders GROUP BY user_id ORDER BY n DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert heaviest is not None, "no orders filled"
    due0, last = order0 + filler.orders, order0 + filler.orders + filler.due - 1
    seconds = time.monotonic() - started
    return Filled(order0, due0, last, heaviest["user_id"], heaviest["n"], seconds)


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    value: int = await conn.fetchval(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
    return value


async def _move_sequence(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
        f" (SELECT coalesce(max(id), 1) FROM {table}))"
    )


async def _insert_users(conn: asyncpg.Connection, first: int, count: int) -> None:
    await conn.execute(
        "INSERT INTO users (id, openid, session_key_sealed, created_at, updated_at)"
        f" SELECT $1 + u, {_OPENID}, 'sealed', t, t"
        " FROM generate_series(0, $2 - 1) u,"
        " LATERAL (SELECT now() - interval '3 years' + u * interval '1 second') AS c(t)",
        first,
        count,
    )


def _user_index(salt: int, users: int) -> str:
    # Squaring a uniform number skews towards low indexes: a few heavy users, a long tail.
    return f"least({users} - 1, floor({users} * power({_UNIFORM.format(salt=salt)}, 2)))::bigint"


async def _insert_orders(
    conn: asyncpg.Connection, filler: Filler, first: int, user0: int, users: int, product: int
) -> None:
    every = max(1, filler.orders // max(1, filler.review_count))
    await conn.execute(
        f"""
        INSERT INTO orders (id, out_trade_no, user_id, openid, product_id, quantity, total_fee,
            description, status, sign_type, client_ip, idempotency_key, time_expire, prepay_id,
            prepay_expires_at, transaction_id, paid_at, cash_fee, refunded_fee, bank_type,
            review_reason, closed_at, sweep_lease_until, created_at, updated_at)
        SELECT $1 + g - 1, {_OUT_TRADE_NO.format(tag="F")}, $2 + u, {_OPENID}, $3,
            q, q * $4, 'shop-goods', s, 'MD5', '127.0.0.1',
            CASE WHEN g % 2 = 0 THEN md5(g::text) END,
            created_at + interval '30 minutes',
            'wx' || to_char(created_at, 'DDHH24MISS') || left(md5('p' || g), 24),
            created_at + interval '2 hours',
            CASE WHEN paid THEN '4200' || lpad(g::text, 24, '0') END,
            CASE WHEN paid THEN created_at + interval '20 seconds' END,
            CASE WHEN paid THEN q * $4 END,
            CASE WHEN s = 'REFUND' THEN q * $4 ELSE 0 END,
            CASE WHEN paid THEN 'OTHERS' END,
            CASE WHEN g % $6 = 0 THEN
                (CASE WHEN g % 2 = 0 THEN 'AMOUNT_MISMATCH' ELSE 'PAID_AFTER_CLOSE' END) END,
            CASE WHEN s = 'CLOSED' THEN created_at + interval '31 minutes' END,
            CASE WHEN s = 'CLOSED' THEN created_at + interval '33 minutes' END,
            created_at,
            created_at + CASE WHEN s = 'CLOSED' THEN interval '31 minutes'
                ELSE interval '20 seconds' END
        FROM generate_series(1, $5) g,
        LATERAL (SELECT now() - interval '2 hours' - (1 - g::float8 / $5) * interval '730 days',
            abs(hashint4(g) % 100), 1 + abs(hashint4(g + 1) % 3), {_user_index(11, users)})
            AS r(created_at, bucket, q, u),
        LATERAL (SELECT CASE WHEN bucket < 72 THEN 'SUCCESS' WHEN bucket < 97 THEN 'CLOSED'
            ELSE 'REFUND' END) AS st(s),
        LATERAL (SELECT s IN ('SUCCESS', 'REFUND')) AS p(paid)
        """,
        first,
        user0,
        product,
        filler.price_fen,
        filler.orders,
        every,
    )


async def _insert_due(
    conn: asyncpg.Connection, filler: Filler, first: int, user0: int, users: int, product: int
) -> None:
    """Unpaid orders past ``time_expire``: each costs a pass the most work (query, close)."""
    await conn.execute(
        f"""
        INSERT INTO orders (id, out_trade_no, user_id, openid, product_id, quantity, total_fee,
            description, status, sign_type, client_ip, time_expire, prepay_id, prepay_expires_at,
            created_at, updated_at)
        SELECT $1 + g - 1, {_OUT_TRADE_NO.format(tag="D")}, $2 + u, {_OPENID}, $3,
            1, $4, 'shop-goods', 'NOTPAY', 'MD5', '127.0.0.1',
            created_at + interval '30 minutes', 'wx' || left(md5('d' || g), 34),
            created_at + interval '2 hours', created_at, created_at
        FROM generate_series(1, $5) g,
        LATERAL (SELECT now() - interval '35 minutes' - g * interval '60 minutes' / $5,
            {_user_index(13, users)}) AS r(created_at, u)
        """,
        first,
        user0,
        product,
        filler.price_fen,
        filler.due,
    )


async def _insert_events(conn: asyncpg.Connection, first: int, last: int) -> None:
    await conn.execute(
        "INSERT INTO order_events (order_id, kind, detail, created_at)"
        " SELECT id, 'PAID', '', paid_at FROM orders"
        " WHERE id BETWEEN $1 AND $2 AND status IN ('SUCCESS', 'REFUND')",
        first,
        last,
    )


async def _insert_notifies(conn: asyncpg.Connection, filler: Filler, first: int) -> None:
    await conn.execute(
        """
        INSERT INTO payment_notifies (received_at, out_trade_no, transaction_id, total_fee,
            verdict, detail, raw)
        SELECT coalesce(o.paid_at, o.created_at) + (g - 1) / $3 * interval '5 minutes',
            o.out_trade_no, o.transaction_id, o.total_fee,
            CASE WHEN o.status = 'CLOSED' THEN 'PAYMENT_FAILED'
                WHEN g <= $3 THEN 'PAID' ELSE 'DUPLICATE' END,
            '',
            json_build_object('appid', 'wx2421b1c4370ec43b', 'bank_type', 'OTHERS',
                'cash_fee', o.total_fee::text, 'fee_type', 'CNY', 'is_subscribe', 'N',
                'mch_id', '10000100', 'nonce_str', md5('n' || g), 'openid', o.openid,
                'out_trade_no', o.out_trade_no, 'result_code',
                CASE WHEN o.status = 'CLOSED' THEN 'FAIL' ELSE 'SUCCESS' END,
                'return_code', 'SUCCESS', 'sign', upper(md5('s' || g)),
                'time_end', to_char(o.created_at, 'YYYYMMDDHH24MISS'),
                'total_fee', o.total_fee::text, 'trade_type', 'JSAPI',
                'transaction_id', o.transaction_id)::text
        FROM generate_series(1, $2) g
        JOIN orders o ON o.id = $1 + (g - 1) % $3
        """,
        first,
        filler.notifies,
        filler.orders,
    )


async def reset_due(database: str, filled: Filled) -> None:
    """Orders as filled: the due ones unpaid and unleased again, any added since removed."""
    conn = await asyncpg.connect(pg_url(database))
    try:
        await conn.execute("DELETE FROM orders WHERE id > $1", filled.last_order_id)
        await conn.execute(
            "UPDATE orders SET status = 'NOTPAY', closed_at = NULL, sweep_lease_until = NULL,"
            " updated_at = created_at WHERE id BETWEEN $1 AND $2",
            filled.first_due_id,
            filled.last_order_id,
        )
        await conn.execute("VACUUM (ANALYZE) orders")
    finally:
        await conn.close()

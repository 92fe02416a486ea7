"""Exactly once across processes: concurrent duplicates through two uvicorn workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import utcnow
from app.wechat.xmlcodec import from_xml
from tests.helpers import at_time, scalar
from tests.payments.test_notify import signed_notify
from tests.plugins.cluster import running_services


async def insert_order(engine: AsyncEngine, out_trade_no: str, total_fee: int) -> None:
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            at_time(
                "INSERT INTO users (openid, session_key_sealed, created_at, updated_at) "
                "VALUES ('o-proc', 'x', :t, :t)"
            ),
            {"t": now},
        )
        await conn.execute(
            at_time(
                "INSERT INTO products (name, description, price_fen, active, created_at) "
                "VALUES ('p', 'shop-goods', :fee, true, :t)"
            ),
            {"fee": total_fee, "t": now},
        )
        await conn.execute(
            at_time(
                "INSERT INTO orders (out_trade_no, user_id, openid, product_id, quantity, "
                "total_fee, description, status, sign_type, client_ip, time_expire, "
                "created_at, updated_at) SELECT :no, u.id, u.openid, p.id, 1, :fee, 'shop-goods',"
                " 'NOTPAY', 'MD5', '127.0.0.1', :t, :t, :t FROM users u, products p"
            ),
            {"no": out_trade_no, "fee": total_fee, "t": now},
        )


async def test_fifty_concurrent_duplicates_through_two_processes_pay_once(
    database_url: str, engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    await insert_order(engine, "PROC0000000000000001", 100)
    body = signed_notify(
        settings,
        out_trade_no="PROC0000000000000001",
        transaction_id="4200000000000000000000000001",
        total_fee=100,
        cash_fee=100,
    )

    # Two separate servers, requests alternating between them: two processes for certain.
    with running_services(database_url, "http://127.0.0.1:9", tmp_path, count=2) as services:
        urls = [service.notify_url for service in services]
        async with httpx.AsyncClient(timeout=30) as http:
            replies = await asyncio.gather(
                *(http.post(urls[i % 2], content=body) for i in range(60))
            )

    assert [from_xml(r.content)["return_code"] for r in replies] == ["SUCCESS"] * 60
    assert await scalar(engine, "SELECT status FROM orders") == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM order_events WHERE kind = 'PAID'") == 1
    verdicts = await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'PAID'")
    duplicates = await scalar(
        engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'DUPLICATE'"
    )
    assert (verdicts, duplicates) == (1, 59)

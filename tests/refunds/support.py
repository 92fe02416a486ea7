"""Steps the refund tests share: a paid order, a refund request, the rows behind them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.wechat.client import WeChatPayClient
from app.wechat.models import RefundQueryRequest
from tests.helpers import ADMIN, add_product, create_order, login, prepay_id_of, set_time
from tests.plugins.simulator import SimulatorHandle


async def paid_order(
    client: httpx.AsyncClient, simulator: SimulatorHandle, price_fen: int = 990
) -> dict[str, Any]:
    """An order the user has paid, recorded as SUCCESS (learnt by order query)."""
    auth = await login(client, simulator)
    order = await create_order(client, auth, await add_product(client, price_fen=price_fen))
    await simulator.pay(prepay_id_of(order))
    no = order["out_trade_no"]
    synced = await client.get(f"/api/v1/orders/{no}?sync=true", headers=auth)
    assert synced.json()["status"] == "SUCCESS"
    return {**synced.json(), "auth": auth}


async def refund(
    client: httpx.AsyncClient, out_trade_no: str, refund_fee: int, **headers: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/admin/orders/{out_trade_no}/refunds",
        json={"refund_fee": refund_fee, "reason": "套餐未使用"},
        headers={**ADMIN, **headers},
    )


async def at_wechat(simulator: SimulatorHandle, out_trade_no: str) -> dict[str, Any]:
    orders = {o["out_trade_no"]: o for o in await simulator.orders()}
    return orders[out_trade_no]


async def refund_row(engine: AsyncEngine, out_refund_no: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        sql = text("SELECT * FROM refunds WHERE out_refund_no = :n")
        row = (await conn.execute(sql, {"n": out_refund_no})).one()
    return dict(row._mapping)


async def order_row(engine: AsyncEngine, out_trade_no: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        sql = text("SELECT * FROM orders WHERE out_trade_no = :n")
        row = (await conn.execute(sql, {"n": out_trade_no})).one()
    return dict(row._mapping)


async def age_refunds(engine: AsyncEngine, minutes: int) -> None:
    """Pretend every refund was last touched ``minutes`` ago."""
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    await set_time(engine, "UPDATE refunds SET updated_at = :t", moment)


async def wait_for_status(
    engine: AsyncEngine, out_refund_no: str, status: str, within: float = 5.0
) -> None:
    for _ in range(int(within / 0.02)):
        if (await refund_row(engine, out_refund_no))["status"] == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"refund {out_refund_no} never became {status}")


async def until(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.02)


async def settled_at_wechat(pay: WeChatPayClient, out_refund_no: str) -> None:
    """Wait until WeChat (the simulator) reports the refund SUCCESS."""

    async def settled() -> bool:
        result = await pay.refund_query(RefundQueryRequest(out_refund_no=out_refund_no))
        return all(item.refund_status.value == "SUCCESS" for item in result.refunds)

    await until(settled)

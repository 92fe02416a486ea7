"""Small steps most service tests share: a logged-in user, a product, an order."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import UTCDateTime
from tests.plugins.simulator import SimulatorHandle

ADMIN = {"X-Admin-Token": "dev-admin-token"}


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not there within {within} s")
        await asyncio.sleep(0.02)


async def login(client: httpx.AsyncClient, simulator: SimulatorHandle) -> dict[str, str]:
    """Authorization headers for a new user logged in through the simulator."""
    code, _ = await simulator.login_code()
    response = await client.post("/api/v1/auth/login", json={"code": code})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def add_product(
    client: httpx.AsyncClient, price_fen: int = 990, description: str = "短信平台-短信套餐购买"
) -> int:
    body = {"name": "短信套餐", "description": description, "price_fen": price_fen}
    response = await client.post("/api/v1/admin/products", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    product_id: int = response.json()["id"]
    return product_id


async def create_order(
    client: httpx.AsyncClient, auth: dict[str, str], product_id: int, quantity: int = 1
) -> dict[str, Any]:
    body = {"product_id": product_id, "quantity": quantity}
    response = await client.post("/api/v1/orders", json=body, headers=auth)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def prepay_id_of(order: dict[str, Any]) -> str:
    package: str = order["pay_params"]["package"]
    assert package.startswith("prepay_id=")
    return package.removeprefix("prepay_id=")


def independent_pay_sign(params: dict[str, str], appid: str, api_key: str) -> str:
    """paySign recomputed from PROTOCOL.md §4 without our signing module."""
    signed = {**{k: v for k, v in params.items() if k != "paySign"}, "appId": appid}
    message = "&".join(f"{k}={signed[k]}" for k in sorted(signed)) + f"&key={api_key}"
    if params["signType"] == "HMAC-SHA256":
        return hmac.new(api_key.encode(), message.encode(), hashlib.sha256).hexdigest().upper()
    return hashlib.md5(message.encode()).hexdigest().upper()  # noqa: S324 - WeChat's rule


def at_time(sql: str) -> TextClause:
    """``sql`` with ``:t`` bound as the app binds times (``UTCDateTime``: aware UTC on
    PostgreSQL, naive UTC on SQLite), so tests can write times on either database."""
    return text(sql).bindparams(bindparam("t", type_=UTCDateTime()))


async def set_time(engine: AsyncEngine, sql: str, moment: dt.datetime, **params: Any) -> None:
    """Run one statement that writes ``moment`` as ``:t`` (see ``at_time``)."""
    async with engine.begin() as conn:
        await conn.execute(at_time(sql), {"t": moment, **params})


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()

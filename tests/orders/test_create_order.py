"""Create order end to end over HTTP against the simulator (issue 5)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.conftest import ClientFactory
from tests.helpers import (
    ADMIN,
    add_product,
    create_order,
    independent_pay_sign,
    login,
    prepay_id_of,
    scalar,
)
from tests.plugins.simulator import SimulatorHandle


async def test_order_is_priced_on_the_server_and_returns_valid_pay_params(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, settings: Settings
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client, price_fen=990)

    order = await create_order(client, auth, product_id, quantity=3)

    assert order["status"] == "NOTPAY"
    assert order["total_fee"] == 2970
    assert order["description"] == "短信平台-短信套餐购买"
    params = order["pay_params"]
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == "MD5"
    assert abs(int(params["timeStamp"]) - time.time()) < 60
    expected = independent_pay_sign(params, settings.appid, settings.api_key.get_secret_value())
    assert params["paySign"] == expected
    at_wechat = {o["out_trade_no"]: o for o in await fresh_simulator.orders()}
    assert at_wechat[order["out_trade_no"]]["total_fee"] == 2970
    assert at_wechat[order["out_trade_no"]]["prepay_id"] == prepay_id_of(order)


async def test_hmac_sign_type_is_used_for_order_and_pay_params(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, settings: Settings
) -> None:
    client = await make_client(sign_type="HMAC-SHA256")
    auth = await login(client, fresh_simulator)

    order = await create_order(client, auth, await add_product(client))

    params = order["pay_params"]
    assert params["signType"] == "HMAC-SHA256"
    assert len(params["paySign"]) == 64
    assert params["paySign"] == independent_pay_sign(
        params, settings.appid, settings.api_key.get_secret_value()
    )


async def test_client_cannot_send_a_price(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)

    response = await client.post(
        "/api/v1/orders", json={"product_id": product_id, "total_fee": 1}, headers=auth
    )

    assert response.status_code == 422
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0


async def test_order_without_a_session_is_told_to_log_in(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/orders", json={"product_id": 1})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "SESSION_MISSING"


async def test_unknown_and_disabled_products_cannot_be_ordered(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    disabled = await client.post(f"/api/v1/admin/products/{product_id}/disable", headers=ADMIN)
    assert disabled.status_code == 200

    for pid in (product_id, 999_999):
        response = await client.post("/api/v1/orders", json={"product_id": pid}, headers=auth)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "PRODUCT_NOT_FOUND"
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0


async def test_wechat_rejection_reaches_the_client_and_keeps_a_retryable_order(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # A wrong API key: WeChat answers return_code=FAIL with its own message (PROTOCOL.md §2.2).
    client = await make_client(api_key="x" * 32)
    auth = await login(client, fresh_simulator)

    response = await client.post(
        "/api/v1/orders", json={"product_id": await add_product(client)}, headers=auth
    )

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "WECHAT_REJECTED"
    assert "签名" in error["message"] or "SIGN" in error["message"].upper()
    assert await scalar(engine, "SELECT status FROM orders") == "NOTPAY"
    assert await scalar(engine, "SELECT prepay_error FROM orders") is not None
    assert await scalar(engine, "SELECT prepay_id FROM orders") is None


async def test_one_upstream_failure_is_retried_with_the_same_out_trade_no(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    await fresh_simulator.set_fault("upstream_5xx", endpoint="unifiedorder", count=1)

    order = await create_order(client, auth, product_id)

    at_wechat = await fresh_simulator.orders()
    assert [o["out_trade_no"] for o in at_wechat] == [order["out_trade_no"]]


async def test_retry_exhaustion_is_503_and_the_order_can_be_paid_later(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    await fresh_simulator.set_fault("systemerror", endpoint="unifiedorder")

    failed = await client.post("/api/v1/orders", json={"product_id": product_id}, headers=auth)

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "WECHAT_UNAVAILABLE"
    out_trade_no = await scalar(engine, "SELECT out_trade_no FROM orders")
    await fresh_simulator.clear_faults()
    retried = await client.post(f"/api/v1/orders/{out_trade_no}/pay-params", headers=auth)
    assert retried.status_code == 200
    assert retried.json()["out_trade_no"] == out_trade_no
    assert await scalar(engine, "SELECT count(*) FROM orders") == 1


async def test_idempotency_key_returns_the_same_order(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = await login(client, fresh_simulator)
    body = {"product_id": await add_product(client)}
    headers = {**auth, "Idempotency-Key": "checkout-42"}

    first, second = await asyncio.gather(
        client.post("/api/v1/orders", json=body, headers=headers),
        client.post("/api/v1/orders", json=body, headers=headers),
    )

    assert {first.status_code, second.status_code} <= {200, 201}
    assert first.json()["out_trade_no"] == second.json()["out_trade_no"]
    assert await scalar(engine, "SELECT count(*) FROM orders") == 1
    assert len(await fresh_simulator.orders()) == 1


async def test_idempotency_key_reused_for_another_order_is_a_conflict(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    auth = {**await login(client, fresh_simulator), "Idempotency-Key": "k1"}
    product_id = await add_product(client)
    first = await client.post("/api/v1/orders", json={"product_id": product_id}, headers=auth)
    other = await client.post(
        "/api/v1/orders", json={"product_id": product_id, "quantity": 2}, headers=auth
    )

    assert first.status_code == 201
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_an_empty_idempotency_key_is_no_key(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    auth = {**await login(client, fresh_simulator), "Idempotency-Key": ""}
    body = {"product_id": await add_product(client)}

    first = await client.post("/api/v1/orders", json=body, headers=auth)
    second = await client.post("/api/v1/orders", json=body, headers=auth)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["out_trade_no"] != second.json()["out_trade_no"]
    assert await scalar(engine, "SELECT count(*) FROM orders") == 2


async def test_someone_elses_order_is_not_found(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    alice = await login(client, fresh_simulator)
    bob = await login(client, fresh_simulator)
    order = await create_order(client, alice, await add_product(client))

    for path in ("", "/pay-params", "/close"):
        method = client.get if path == "" else client.post
        response = await method(f"/api/v1/orders/{order['out_trade_no']}{path}", headers=bob)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "ORDER_NOT_FOUND"


async def test_orders_are_listed_newest_first(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client)
    numbers = [(await create_order(client, auth, product_id))["out_trade_no"] for _ in range(3)]

    page = (await client.get("/api/v1/orders?limit=2", headers=auth)).json()
    rest = (await client.get("/api/v1/orders?limit=2&offset=2", headers=auth)).json()

    listed = [o["out_trade_no"] for o in page["items"] + rest["items"]]
    assert listed == list(reversed(numbers))


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine, trusted: bool
) -> None:
    # httpx.ASGITransport presents every request as coming from 127.0.0.1.
    client = await make_client(trusted_proxies=["127.0.0.1"] if trusted else [])
    auth = await login(client, fresh_simulator)
    headers = {**auth, "X-Forwarded-For": "198.51.100.7"}

    response = await client.post(
        "/api/v1/orders", json={"product_id": await add_product(client)}, headers=headers
    )

    assert response.status_code == 201
    expected = "198.51.100.7" if trusted else "127.0.0.1"
    assert await scalar(engine, "SELECT client_ip FROM orders") == expected


async def test_total_beyond_what_wechat_accepts_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    # total_fee is at most 10 digits of fen at WeChat; 100 000 000 x 999 would be 12.
    auth = await login(client, fresh_simulator)
    product_id = await add_product(client, price_fen=100_000_000)

    response = await client.post(
        "/api/v1/orders", json={"product_id": product_id, "quantity": 999}, headers=auth
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "AMOUNT_TOO_LARGE"
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0
    assert await fresh_simulator.orders() == []

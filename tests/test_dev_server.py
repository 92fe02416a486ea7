"""``uvicorn app.main:app --port N`` in dev, without ``make run`` and without
``WXPAY_SELF_BASE_URL``: the simulator mounted at ``/sim`` still answers the service, and its
notifies still reach it, whatever the port (login used to answer 503 off port 8000)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import ADMIN, prepay_id_of
from tests.hermetic import child_env
from tests.plugins.cluster import free_port, spawn_service, wait_ready


@pytest.fixture(scope="module")
def dev_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The service as a developer starts it by hand: dev defaults, the simulator mounted."""
    port = free_port()
    assert port != 8000  # the default WXPAY_SELF_BASE_URL's port
    env = child_env(WXPAY_DATABASE_URL=database_url, WXPAY_SWEEP_INTERVAL_SECONDS="0")
    with spawn_service(port, env, tmp_path_factory.mktemp("dev")) as service:
        wait_ready(service)
        with httpx.Client(base_url=service.base_url, trust_env=False, timeout=10) as http:
            yield http


def test_login_through_the_mount_works_on_any_port(
    dev_server: httpx.Client, engine: AsyncEngine
) -> None:
    code = dev_server.post("/sim/_control/login-code", json={}).json()["code"]

    login = dev_server.post("/api/v1/auth/login", json={"code": code})

    assert login.status_code == 200, login.text
    assert login.json()["token"]


def test_the_mounted_simulators_payment_notify_reaches_the_service_on_any_port(
    dev_server: httpx.Client, engine: AsyncEngine
) -> None:
    code = dev_server.post("/sim/_control/login-code", json={}).json()["code"]
    token = dev_server.post("/api/v1/auth/login", json={"code": code}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    product = {"name": "套餐", "description": "短信平台-短信套餐购买", "price_fen": 990}
    product_id = dev_server.post("/api/v1/admin/products", json=product, headers=ADMIN).json()["id"]
    order = dev_server.post(
        "/api/v1/orders", json={"product_id": product_id, "quantity": 1}, headers=auth
    ).json()

    paid = {"prepay_id": prepay_id_of(order), "result": "SUCCESS"}
    dev_server.post("/sim/_control/pay", json=paid).raise_for_status()

    # Only the notify can mark it paid here: the sweep is off and nothing asks WeChat.
    assert _status_within(dev_server, order["out_trade_no"], auth, "SUCCESS", seconds=5)


def _status_within(
    http: httpx.Client, out_trade_no: str, auth: dict[str, str], wanted: str, seconds: float
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if http.get(f"/api/v1/orders/{out_trade_no}", headers=auth).json()["status"] == wanted:
            return True
        time.sleep(0.05)
    return False

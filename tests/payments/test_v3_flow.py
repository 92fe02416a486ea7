"""WeChat Pay end to end on v2 and v3 (PROTOCOL.md §5, §8): the service against the simulator over
real HTTP, with the notifies WeChat sends, on both databases."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.runtime import warn_of_stranded_v2_orders
from app.simulator.v3files import MERCHANT_PRIVATE_KEY, WECHATPAY_PUBLIC_KEY, write_dev_material
from app.simulator.v3keys import DevMaterial, generate_dev_material
from app.wechat.v3 import load_public_key
from tests.conftest import RuntimeFactory
from tests.helpers import (
    add_product,
    create_order,
    independent_pay_sign,
    login,
    prepay_id_of,
    scalar,
)
from tests.plugins.service import LiveFactory
from tests.plugins.simulator import TEST_TIME_FACTOR, SimulatorHandle, start_simulator
from tests.refunds.support import refund, until, wait_for_status


@pytest.fixture
def v3_simulator(settings: Settings, v3_material: DevMaterial) -> Iterator[SimulatorHandle]:
    # Refunds settle 0.3 s after they are accepted: the answer to the refund request reads
    # PROCESSING whatever the machine's speed, and the notify follows soon after.
    handle, server = start_simulator(
        settings, v3=v3_material.config, refund_settle_seconds=0.3 / TEST_TIME_FACTOR
    )
    try:
        yield handle
    finally:
        server.stop()


def on_v3(material: DevMaterial, directory: Path, wechat_url: str) -> dict[str, Any]:
    """The service's settings for v3 with ``material``'s keys, as an operator sets them."""
    write_dev_material(material, directory)
    private_key, public_key = directory / MERCHANT_PRIVATE_KEY, directory / WECHATPAY_PUBLIC_KEY
    return {
        "api_version": "v3",
        "api_v3_key": material.config.api_v3_key,
        "mch_private_key_path": str(private_key),
        "mch_cert_serial_no": material.config.merchant_serial_no,
        "wechatpay_public_key_path": str(public_key),
        "wechatpay_public_key_id": material.wechatpay_public_key_id,
        "pay_api_base": wechat_url,
        "miniprogram_api_base": wechat_url,
    }


def on_version(
    version: str, material: DevMaterial, directory: Path, wechat_url: str
) -> dict[str, Any]:
    """``on_v3``'s keys, with new orders on ``version``: both versions configured, as for a
    merchant moving from v2 to v3."""
    return {**on_v3(material, directory, wechat_url), "api_version": version}


def pay_sign_holds(params: dict[str, str], settings: Settings, material: DevMaterial) -> bool:
    """The mini-program's check of ``paySign``: v3 RSA with the merchant's public key (§8.4),
    v2 with the merchant key (§4)."""
    if params["signType"] != "RSA":
        expected = independent_pay_sign(params, settings.appid, settings.api_key.get_secret_value())
        return params["paySign"] == expected
    message = (
        f"{settings.appid}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    )
    key = load_public_key(material.config.merchant_public_key_pem)
    try:
        key.verify(base64.b64decode(params["paySign"]), message.encode(), PKCS1v15(), SHA256())
    except Exception:
        return False
    return True


# What each version signs pay params with, and how it acknowledges a notify (§5, §8.5).
VERSIONS = {"v2": ("MD5", 200), "v3": ("RSA", 204)}


@pytest.mark.parametrize("version", sorted(VERSIONS))
async def test_an_order_is_paid_and_refunded_through_wechats_notifies(
    make_live_client: LiveFactory,
    v3_simulator: SimulatorHandle,
    v3_material: DevMaterial,
    settings: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
    version: str,
) -> None:
    """The same flow on either version, against one simulator that speaks both."""
    client = await make_live_client(
        **on_version(version, v3_material, tmp_path, v3_simulator.base_url)
    )
    auth = await login(client, v3_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    sign_type, acknowledged = VERSIONS[version]

    assert order["pay_params"]["signType"] == sign_type
    assert pay_sign_holds(order["pay_params"], settings, v3_material)
    assert await scalar(engine, "SELECT api_version FROM orders") == version

    await v3_simulator.pay(prepay_id_of(order))  # WeChat posts its notify to the service
    await until(lambda: _status(client, no, auth, "SUCCESS"))
    refunded = await refund(client, no, 400)

    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["status"] == "PROCESSING"
    # The simulator settles the refund and posts its refund notify.
    await wait_for_status(engine, refunded.json()["out_refund_no"], "SUCCESS", within=10)
    # Both notifies went out in the order's version and were acknowledged its way, once each.
    delivered = await v3_simulator.notifies()
    assert {(n["kind"], n["api_version"], n["status"]) for n in delivered} == {
        ("payment", version, acknowledged),
        ("refund", version, acknowledged),
    }


@pytest.mark.parametrize("concurrent", [False, True])
@pytest.mark.parametrize("version", sorted(VERSIONS))
async def test_duplicate_notifies_change_nothing(
    make_live_client: LiveFactory,
    v3_simulator: SimulatorHandle,
    v3_material: DevMaterial,
    engine: AsyncEngine,
    tmp_path: Path,
    version: str,
    concurrent: bool,
) -> None:
    # PROTOCOL.md §5, §8.5: the same notify may arrive many times, even at once from several
    # servers. On PostgreSQL the repeats take the duplicate shortcut (app.payments.service).
    client = await make_live_client(
        **on_version(version, v3_material, tmp_path, v3_simulator.base_url)
    )
    await v3_simulator.set_fault("duplicate_notify", copies=5, concurrent=concurrent)
    order = await create_order(client, await login(client, v3_simulator), await add_product(client))
    await v3_simulator.pay(prepay_id_of(order))

    attempts = await v3_simulator.wait_for_notifies(6, verdict="acknowledged")

    assert len(attempts) == 6
    assert {a["api_version"] for a in attempts} == {version}
    assert await scalar(engine, "SELECT status FROM orders") == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict='PAID'") == 1
    assert (
        await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict='DUPLICATE'") == 5
    )


async def test_on_platform_certificates_the_flow_goes_through_a_rotation(
    make_live_client: LiveFactory, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    """A merchant without WeChat Pay's public key (§8.6): the service downloads the platform
    certificates, and follows WeChat when it rotates to a new one between order and notify."""
    material = generate_dev_material(settings.mch_id, certificates=2)
    wechat, server = start_simulator(
        settings, v3=material.config, refund_settle_seconds=0.3 / TEST_TIME_FACTOR
    )
    try:
        service = on_v3(material, tmp_path, wechat.base_url)
        del service["wechatpay_public_key_path"], service["wechatpay_public_key_id"]
        client = await make_live_client(**service)
        auth = await login(client, wechat)
        order = await create_order(client, auth, await add_product(client))
        rotated = await wechat.rotate_certificate()
        await wechat.pay(prepay_id_of(order))
        await until(lambda: _status(client, order["out_trade_no"], auth, "SUCCESS"))
        refunded = (await refund(client, order["out_trade_no"], 990)).json()
        await wait_for_status(engine, refunded["out_refund_no"], "SUCCESS", within=10)
        delivered = await wechat.notifies()
    finally:
        server.stop()

    assert order["pay_params"]["signType"] == "RSA"
    assert rotated["wechatpay_serial"] == material.config.signing_keys[1].serial
    assert {(n["kind"], n["status"]) for n in delivered} == {("payment", 204), ("refund", 204)}
    assert {n["headers"]["Wechatpay-Serial"] for n in delivered} == {rotated["wechatpay_serial"]}


async def test_switching_to_v3_keeps_settling_the_v2_orders(
    make_live_client: LiveFactory,
    v3_simulator: SimulatorHandle,
    v3_material: DevMaterial,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """A merchant moves from v2 to v3 with unpaid, paid and partly refunded v2 orders: each
    keeps going through v2 (queries, refunds, WeChat's v2 notifies), new orders use v3."""
    at_wechat = {
        "pay_api_base": v3_simulator.base_url,
        "miniprogram_api_base": v3_simulator.base_url,
    }
    v2_service = await make_live_client(**at_wechat)
    auth = await login(v2_service, v3_simulator)
    product = await add_product(v2_service)
    unpaid, paid, refunded = [await create_order(v2_service, auth, product) for _ in range(3)]
    for order in (paid, refunded):
        await v3_simulator.pay(prepay_id_of(order))
    await until(lambda: _status(v2_service, refunded["out_trade_no"], auth, "SUCCESS"))
    await until(lambda: _status(v2_service, paid["out_trade_no"], auth, "SUCCESS"))
    first_refund = (await refund(v2_service, refunded["out_trade_no"], 300)).json()

    v3_service = await make_live_client(**on_v3(v3_material, tmp_path, v3_simulator.base_url))
    await v3_simulator.pay(prepay_id_of(unpaid))  # the user pays an old v2 order after the switch
    second_refund = (await refund(v3_service, refunded["out_trade_no"], 300)).json()
    paid_refund = (await refund(v3_service, paid["out_trade_no"], 990)).json()
    new = await create_order(v3_service, auth, product)
    await v3_simulator.pay(prepay_id_of(new))

    await until(lambda: _status(v3_service, unpaid["out_trade_no"], auth, "SUCCESS"), within=10)
    await until(lambda: _status(v3_service, new["out_trade_no"], auth, "SUCCESS"), within=10)
    for settled in (first_refund, second_refund, paid_refund):
        await wait_for_status(engine, settled["out_refund_no"], "SUCCESS", within=10)
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT api_version FROM orders ORDER BY id"))).all()
    assert [v for (v,) in versions] == ["v2", "v2", "v2", "v3"]
    kinds = {(n["kind"], n["api_version"]) for n in await v3_simulator.notifies()}
    assert kinds == {("payment", "v2"), ("refund", "v2"), ("payment", "v3")}


async def _status(client: httpx.AsyncClient, no: str, auth: dict[str, str], want: str) -> bool:
    return (await client.get(f"/api/v1/orders/{no}", headers=auth)).json()["status"] == want


async def test_on_v3_without_the_v2_key_start_up_warns_of_unsettled_v2_orders(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    make_runtime: RuntimeFactory,
    v3_material: DevMaterial,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the APIv2 key (optional under v3 in production), v2 orders can no longer be
    queried or refunded: an operator must hear of the ones still open before dropping it."""
    auth = await login(client, fresh_simulator)
    await create_order(client, auth, await add_product(client))  # unpaid, on v2
    v3 = on_v3(v3_material, tmp_path, fresh_simulator.base_url)
    with_v2_key = await make_runtime(**v3)
    without = await make_runtime(**v3, env="production", api_key="devapikey")

    assert await warn_of_stranded_v2_orders(with_v2_key) == 0
    assert not caplog.records
    assert await warn_of_stranded_v2_orders(without) == 1
    [warning] = [r.getMessage() for r in caplog.records if r.name == "app.runtime"]
    assert "1 unpaid v2 orders" in warning and "WXPAY_API_KEY" in warning

"""The command line: catalogue management, demo seed and a one-off sweep."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import DEV_APP_SECRET, Settings
from tests.conftest import ClientFactory
from tests.helpers import add_product, create_order, login, scalar, set_time
from tests.hermetic import child_env
from tests.plugins.simulator import SimulatorHandle
from tests.plugins.tls import Pki, TlsSimulator
from tests.refunds.support import age_refunds, at_wechat, paid_order, refund, refund_row


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m app.cli`` with only the ``WXPAY_*`` settings given here, run elsewhere than
    the checkout (nothing there is read, a ``.env`` included)."""
    with tempfile.TemporaryDirectory() as elsewhere:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=elsewhere,
            env=child_env(WXPAY_DATABASE_URL=database_url, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


async def test_products_can_be_added_listed_and_disabled(
    database_url: str, engine: AsyncEngine
) -> None:
    added = cli(
        database_url,
        "products",
        "add",
        "--name",
        "套餐",
        "--description",
        "短信平台-短信套餐购买",
        "--price-fen",
        "990",
    )
    product_id = int(added.stdout.split()[-1])
    disabled = cli(database_url, "products", "disable", str(product_id))
    listed = cli(database_url, "products", "list")

    assert added.returncode == disabled.returncode == listed.returncode == 0
    assert listed.stdout.split("\t")[:3] == [str(product_id), "990", "off"]
    assert await scalar(engine, "SELECT active FROM products") in (False, 0)


async def test_seed_demo_fills_only_an_empty_catalogue(
    database_url: str, engine: AsyncEngine
) -> None:
    first = cli(database_url, "seed-demo")
    second = cli(database_url, "seed-demo")

    assert "added 3 demo products" in first.stdout
    assert "nothing added" in second.stdout
    assert await scalar(engine, "SELECT count(*) FROM products") == 3


def test_disabling_an_unknown_product_fails_clearly(database_url: str, engine: AsyncEngine) -> None:
    result = cli(database_url, "products", "disable", "424242")

    assert result.returncode == 1
    assert result.stderr.startswith("error: PRODUCT_NOT_FOUND:")
    assert "Traceback" not in result.stderr


async def test_sweep_runs_once_from_the_command_line(
    database_url: str, engine: AsyncEngine
) -> None:
    result = cli(database_url, "sweep", WXPAY_PAY_API_BASE="http://127.0.0.1:9")

    assert result.returncode == 0
    assert result.stdout.strip() == "claimed 0, paid 0, closed 0, failed 0"


async def test_cli_logs_are_json_lines_with_secrets_redacted(
    database_url: str,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
) -> None:
    """A CLI run configures logging as the server does: a sweep logs WeChat's words, here a
    refusal that quotes the AppSecret back, and the line is JSON with the secret redacted."""
    auth = await login(client, fresh_simulator)
    no = (await create_order(client, auth, await add_product(client)))["out_trade_no"]
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    await set_time(engine, "UPDATE orders SET created_at = :t WHERE out_trade_no = :n", old, n=no)
    quoted = f"appsecret {DEV_APP_SECRET} refused"
    await fresh_simulator.set_fault("business_error", endpoint="orderquery", err_code_des=quoted)

    result = cli(
        database_url,
        "sweep",
        WXPAY_PAY_API_BASE=fresh_simulator.base_url,
        WXPAY_SIMULATOR_MOUNT="false",
        WXPAY_LOG_FORMAT="json",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "claimed 1, paid 0, closed 0, failed 1"
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    [query] = [line for line in lines if line.get("wechat_api") == "v2 /pay/orderquery"]
    assert query["level"] == "INFO" and query["request_id"] == "-"
    [warning] = [line for line in lines if line["message"].startswith("sweep could not settle")]
    assert "appsecret *** refused" in warning["message"]
    assert DEV_APP_SECRET not in result.stderr


# --- refunds need the merchant certificate (mutual TLS, PROTOCOL.md §6.3) ---------------------


async def test_sweep_sends_a_pending_refund_with_the_merchant_certificate(
    database_url: str,
    engine: AsyncEngine,
    settings: Settings,
    tls_simulator: TlsSimulator,  # before make_client: the service's connections close first
    make_client: ClientFactory,
    pki: Pki,
) -> None:
    no, out_refund_no = await _pending_refund(make_client, tls_simulator, pki, engine)

    result = cli(
        database_url,
        "sweep",
        **_sweep_env(settings, tls_simulator, pki),
        WXPAY_MCH_CERT_PATH=str(pki.merchant_cert),
        WXPAY_MCH_KEY_PATH=str(pki.merchant_key),
    )

    assert result.returncode == 0, result.stderr
    assert tls_simulator.guard.seen == [("/secapi/pay/refund", pki.merchant_name)]
    assert (await refund_row(engine, out_refund_no))["status"] == "PROCESSING"
    assert (await at_wechat(tls_simulator.handle, no))["refunded_fee"] == 990


async def test_without_the_merchant_certificate_the_sweep_cannot_refund(
    database_url: str,
    engine: AsyncEngine,
    settings: Settings,
    tls_simulator: TlsSimulator,
    make_client: ClientFactory,
    pki: Pki,
) -> None:
    no, out_refund_no = await _pending_refund(make_client, tls_simulator, pki, engine)

    result = cli(database_url, "sweep", **_sweep_env(settings, tls_simulator, pki))

    assert result.returncode == 0, result.stderr
    assert tls_simulator.guard.seen == [("/secapi/pay/refund", None)]
    row = await refund_row(engine, out_refund_no)
    # WeChat refused it (HTTP 400) and never had it: a final refusal, as for any 4xx.
    assert (row["status"], "HTTP 400" in row["error"]) == ("FAILED", True)
    assert (await at_wechat(tls_simulator.handle, no))["refunded_fee"] == 0


async def _pending_refund(
    make_client: ClientFactory, simulator: TlsSimulator, pki: Pki, engine: AsyncEngine
) -> tuple[str, str]:
    """A paid order and a refund of it that WeChat never confirmed (PENDING), due for the
    sweep; made by the service with the certificate, so only the sweep's own wiring differs."""
    client = await make_client(
        pay_api_base=simulator.handle.base_url,
        miniprogram_api_base=simulator.handle.base_url,
        extra_ca_certs=str(pki.ca_cert),
        mch_cert_path=str(pki.merchant_cert),
        mch_key_path=str(pki.merchant_key),
    )
    no = (await paid_order(client, simulator.handle))["out_trade_no"]
    await simulator.handle.set_fault("upstream_5xx", endpoint="refund")
    pending = await refund(client, no, 990)
    assert pending.json()["status"] == "PENDING", pending.text
    await simulator.handle.clear_faults()
    simulator.guard.seen.clear()
    await age_refunds(engine, minutes=2)
    return no, pending.json()["out_refund_no"]


def _sweep_env(settings: Settings, simulator: TlsSimulator, pki: Pki) -> dict[str, Any]:
    """The test service's merchant, WeChat at the HTTPS simulator (its CA trusted); no
    certificate."""
    return {
        "WXPAY_APPID": settings.appid,
        "WXPAY_MCH_ID": settings.mch_id,
        "WXPAY_API_KEY": settings.api_key.get_secret_value(),
        "WXPAY_SIGN_TYPE": settings.sign_type.value,
        "WXPAY_PAY_API_BASE": simulator.handle.base_url,
        "WXPAY_EXTRA_CA_CERTS": str(pki.ca_cert),
        "WXPAY_REFUND_NOTIFY_URL": settings.refund_notify_url or "",
    }

"""The simulator as it runs: over real HTTP, mounted in a host app, and never in production."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.config import Environment
from app.simulator import Simulator, SimulatorConfig, SimulatorRefused
from app.simulator.__main__ import parse_args
from app.wechat.signing import new_nonce, sign, verify
from app.wechat.xmlcodec import from_xml, to_xml
from tests.hermetic import child_env, hermetic_settings
from tests.plugins.simulator import ServerThread, SimulatorHandle
from tests.simulator.helpers import ACK


def merchant_app(received: list[dict[str, str]]) -> FastAPI:
    app = FastAPI()

    @app.post("/notify")
    async def notify(request: Request) -> Response:
        received.append(from_xml(await request.body()))
        return Response(ACK, media_type="text/xml")

    return app


@pytest.fixture(scope="module")
def notify_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    server = ServerThread(merchant_app(received))
    base_url = server.start()
    yield f"{base_url}/notify", received
    server.stop()


async def unified_order(
    simulator: SimulatorHandle, openid: str, notify_url: str, *, client_timeout: float = 5.0
) -> dict[str, str]:
    settings = simulator.settings
    fields: dict[str, object] = {
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "nonce_str": new_nonce(),
        "body": "示例商城-会员充值",
        "out_trade_no": new_nonce(20),
        "total_fee": 1,
        "spbill_create_ip": "127.0.0.1",
        "notify_url": notify_url,
        "trade_type": "JSAPI",
        "openid": openid,
    }
    fields["sign"] = sign(fields, settings.api_key.get_secret_value())
    async with httpx.AsyncClient(trust_env=False, timeout=client_timeout) as http:
        response = await http.post(simulator.url("/pay/unifiedorder"), content=to_xml(fields))
    return from_xml(response.content)


async def test_the_whole_payment_runs_over_loopback_http(
    fresh_simulator: SimulatorHandle, notify_server: tuple[str, list[dict[str, str]]]
) -> None:
    notify_url, received = notify_server
    _, openid = await fresh_simulator.login_code()

    reply = await unified_order(fresh_simulator, openid, notify_url)
    paid = await fresh_simulator.pay(reply["prepay_id"])
    [attempt] = await fresh_simulator.wait_for_notifies(1)

    assert verify(reply, fresh_simulator.settings.api_key.get_secret_value())
    assert paid["trade_state"] == "SUCCESS"
    assert (attempt["verdict"], attempt["status"]) == ("acknowledged", 200)
    assert received[-1]["transaction_id"] == paid["transaction_id"]


async def test_a_client_timeout_leaves_the_order_placed(fresh_simulator: SimulatorHandle) -> None:
    _, openid = await fresh_simulator.login_code()
    await fresh_simulator.set_fault("upstream_timeout", endpoint="unifiedorder", seconds=0.5)

    with pytest.raises(httpx.ReadTimeout):
        await unified_order(fresh_simulator, openid, "http://127.0.0.1:9/n", client_timeout=0.1)

    assert len(await fresh_simulator.orders()) == 1


async def test_the_handle_sets_and_clears_faults(fresh_simulator: SimulatorHandle) -> None:
    fault = await fresh_simulator.set_fault("upstream_5xx", endpoint="orderquery", count=2)
    await fresh_simulator.clear_faults()

    async with httpx.AsyncClient(trust_env=False) as http:
        listed = (await http.get(fresh_simulator.url("/_control/faults"))).json()

    assert (fault["name"], fault["remaining"]) == ("upstream_5xx", 2)
    assert listed == []


async def test_the_handle_sets_latency(fresh_simulator: SimulatorHandle) -> None:
    await fresh_simulator.set_latency(50)

    async with httpx.AsyncClient(trust_env=False) as http:
        latency = (await http.get(fresh_simulator.url("/_control/latency"))).json()

    assert latency == {"latency_ms": 50}


@asynccontextmanager
async def host_with_mounted_simulator(simulator: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await simulator.start()
        yield
        await simulator.aclose()

    host = FastAPI(lifespan=lifespan)
    host.mount("/sim", simulator.app)
    async with host.router.lifespan_context(host):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as http:
            yield http


async def test_mounted_under_sim_it_serves_wechat_and_control_paths() -> None:
    settings = hermetic_settings()
    simulator = Simulator(SimulatorConfig.from_settings(settings))

    async with host_with_mounted_simulator(simulator) as http:
        minted = (await http.post("/sim/_control/login-code", json={})).json()
        query = {
            "appid": settings.appid,
            "secret": settings.app_secret.get_secret_value(),
            "js_code": minted["code"],
            "grant_type": "authorization_code",
        }
        session = (await http.get("/sim/sns/jscode2session", params=query)).json()

    assert session["openid"] == minted["openid"]


def test_production_settings_are_refused() -> None:
    production = hermetic_settings(env=Environment.PRODUCTION)

    with pytest.raises(SimulatorRefused):
        SimulatorConfig.from_settings(production)


def test_the_command_refuses_to_start_in_production() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.simulator", "--port", "0"],
        env=child_env(WXPAY_ENV="production"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "production" in result.stderr


def test_the_command_takes_port_time_factor_and_latency() -> None:
    args = parse_args(["--port", "9100", "--time-factor", "0.01", "--latency-ms", "100"])

    assert (args.port, args.time_factor, args.latency_ms) == (9100, 0.01, 100.0)

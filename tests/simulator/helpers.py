"""A merchant's-eye client of the in-process simulator and a programmable notify receiver."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.simulator import Simulator, SimulatorConfig
from app.wechat.signing import SignType, new_nonce, sign, verify
from app.wechat.xmlcodec import from_xml, to_xml
from tests.hermetic import hermetic_settings

ACK = to_xml({"return_code": "SUCCESS", "return_msg": "OK"})
NACK = to_xml({"return_code": "FAIL", "return_msg": "busy"})
_order_numbers = itertools.count(1)


def new_out_trade_no() -> str:
    return f"T{next(_order_numbers):08d}"


@dataclass
class NotifyReceiver:
    """The merchant's notify URL. ``replies`` are used in turn, then ``ACK`` forever; a reply
    is bytes, an int (HTTP status with an ACK body), ``"slow"`` or ``"drop"``."""

    replies: list[bytes | int | str] = field(default_factory=list)
    received: list[dict[str, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    slow_seconds: float = 3.0  # past the notify_timeout of these tests

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.raw.append(request.content)
        self.received.append(from_xml(request.content))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # long enough for concurrent copies to overlap
            return await self._reply()
        finally:
            self.in_flight -= 1

    async def _reply(self) -> httpx.Response:
        reply = self.replies.pop(0) if self.replies else ACK
        if reply == "slow":
            await asyncio.sleep(self.slow_seconds)
            return httpx.Response(200, content=ACK)
        if reply == "drop":
            raise httpx.ConnectError("connection refused")
        if isinstance(reply, int):
            return httpx.Response(reply, content=ACK)
        assert isinstance(reply, bytes)
        return httpx.Response(200, content=reply)


@dataclass
class Merchant:
    """Signs and sends v2 requests as the configured merchant, and checks the answers."""

    http: httpx.AsyncClient
    simulator: Simulator

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    async def call(
        self, path: str, fields: dict[str, Any], *, sign_type: SignType = SignType.MD5
    ) -> dict[str, str]:
        body = self.signed_body(fields, sign_type=sign_type)
        return await self.post(path, body)

    def signed_body(self, fields: dict[str, Any], *, sign_type: SignType = SignType.MD5) -> bytes:
        full: dict[str, object] = {
            "appid": self.config.appid,
            "mch_id": self.config.mch_id,
            "nonce_str": new_nonce(),
            **fields,
        }
        if sign_type is SignType.HMAC_SHA256:
            full["sign_type"] = sign_type.value
        full = {name: value for name, value in full.items() if value is not None}
        full.setdefault("sign", sign(full, self.config.api_key, sign_type))
        return to_xml(full)

    async def post(self, path: str, body: bytes) -> dict[str, str]:
        response = await self.http.post(path, content=body)
        assert response.status_code == 200, response.text
        return from_xml(response.content)

    def is_signed(self, reply: dict[str, str], sign_type: SignType = SignType.MD5) -> bool:
        return verify(reply, self.config.api_key, sign_type)

    async def login(self) -> str:
        return self.simulator.miniprogram.mint_code().openid

    def order_fields(self, openid: str, **overrides: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "body": "示例商城-会员充值",
            "out_trade_no": new_out_trade_no(),
            "total_fee": 100,
            "spbill_create_ip": "203.0.113.7",
            "notify_url": "http://merchant.test/wechat/pay/notify",
            "trade_type": "JSAPI",
            "openid": openid,
        }
        return fields | overrides

    async def place_order(self, **overrides: Any) -> dict[str, Any]:
        """A fresh paying user's order; returns its fields plus ``prepay_id``."""
        sign_type = overrides.pop("sign_type", SignType.MD5)
        fields = self.order_fields(await self.login(), **overrides)
        reply = await self.call("/pay/unifiedorder", fields, sign_type=sign_type)
        assert reply["result_code"] == "SUCCESS", reply
        return fields | {"prepay_id": reply["prepay_id"]}

    async def pay(self, prepay_id: str, result: str = "SUCCESS") -> httpx.Response:
        return await self.http.post(
            "/_control/pay", json={"prepay_id": prepay_id, "result": result}
        )

    async def paid_order(self, **overrides: Any) -> dict[str, Any]:
        order = await self.place_order(**overrides)
        response = await self.pay(order["prepay_id"])
        assert response.status_code == 200, response.text
        return order | {"transaction_id": response.json()["transaction_id"]}

    async def query(self, out_trade_no: str) -> dict[str, str]:
        return await self.call("/pay/orderquery", {"out_trade_no": out_trade_no})

    async def set_fault(self, name: str, **options: Any) -> dict[str, Any]:
        response = await self.http.post("/_control/faults", json={"name": name, **options})
        assert response.status_code == 200, response.text
        fault: dict[str, Any] = response.json()
        return fault

    async def notifies(self) -> list[dict[str, Any]]:
        attempts: list[dict[str, Any]] = (await self.http.get("/_control/notifies")).json()
        return attempts

    async def settled_notifies(self, count: int, *, within: float = 3.0) -> list[dict[str, Any]]:
        """The log once ``count`` attempts have finished (or ``within`` seconds passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            done = [a for a in await self.notifies() if a["verdict"] != "pending"]
            if len(done) >= count or loop.time() > deadline:
                return done
            await asyncio.sleep(0.005)


def fast_config(**overrides: Any) -> SimulatorConfig:
    # 1 s, as for the service's tests (tests/plugins/simulator.py): at 0.2 s a loaded CI machine
    # now and then starved an attempt into a timeout, and the attempts after it shifted by one.
    options: dict[str, Any] = {"time_factor": 0.0001, "notify_timeout": 1.0} | overrides
    return SimulatorConfig.from_settings(hermetic_settings(), **options)


@asynccontextmanager
async def running_merchant(
    receiver: NotifyReceiver, config: SimulatorConfig
) -> AsyncIterator[Merchant]:
    simulator = Simulator(config, notify_transport=httpx.MockTransport(receiver.handle))
    transport = httpx.ASGITransport(app=simulator.app)
    async with (
        simulator,
        httpx.AsyncClient(transport=transport, base_url="http://wechat.test") as http,
    ):
        yield Merchant(http, simulator)

"""Steps the scenarios share: users and orders through the service, payments at the simulator,
and signed notifies posted many at a time the way WeChat's servers post them, on either WeChat
Pay API version (``PayVersion``: v2 XML signed with the key, PROTOCOL.md §5; v3 JSON with an
encrypted resource and ``Wechatpay-*`` signature headers, §8.3 and §8.5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport

from app.config import Settings
from app.simulator.messages import payment_notify_body
from app.simulator.v3envelope import SignatureFlaw, WeChatPayKeys
from app.simulator.v3keys import DevMaterial
from app.simulator.v3messages import notify_body as v3_notify_body
from app.wechat.timefmt import to_rfc3339
from app.wechat.xmlcodec import XmlRejected, from_xml, to_xml
from tests.db import ROOT
from tests.helpers import ADMIN
from tests.payments.test_v3_flow import on_v3
from tests.plugins.cluster import NOTIFY_PATH, ServiceProcess
from tests.plugins.simulator import SimulatorHandle

T = TypeVar("T")
R = TypeVar("R")
FIGURES = ROOT / "var" / "reliability-figures.jsonl"


@dataclass(frozen=True)
class PlacedOrder:
    out_trade_no: str
    total_fee: int
    prepay_id: str
    service: int  # index of the process that created it (and receives its notifies)


@dataclass(frozen=True)
class Notify:
    out_trade_no: str
    kind: str  # "paid", "failed" (result_code FAIL, v2 only) or "forged" (bad signature)
    body: bytes
    api_version: str = "v2"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/xml"})

    @property
    def path(self) -> str:
        return V3_NOTIFY_PATH if self.api_version == "v3" else NOTIFY_PATH


@dataclass(frozen=True)
class Delivery:
    notify: Notify
    status: int | None  # None: no HTTP answer (connection reset, timeout)
    # v2: the XML ``return_code``; v3: the JSON ``code`` (None for a 204, which has no body);
    # with no HTTP answer, the transport error's name.
    return_code: str | None

    @property
    def acknowledged(self) -> bool:
        """WeChat stops retrying: v2 on 200 with ``SUCCESS`` (§5); v3 on any 2xx, whatever
        the body says (§8.5: a 200 with ``FAIL`` counts as success)."""
        if self.status is None:
            return False
        if self.notify.api_version == "v3":
            return 200 <= self.status < 300
        return self.status == 200 and self.return_code == "SUCCESS"


V3_NOTIFY_PATH = "/wechat/pay/v3/notify"
# The simulator's fault endpoints for the v2 calls, on v3 (app/simulator/faults.py).
V3_ENDPOINTS = {"unifiedorder": "v3_jsapi", "refund": "v3_refund"}


@dataclass(frozen=True)
class PayVersion:
    """The WeChat Pay API version a scenario runs on: how the service is configured for it,
    what WeChat's notifies look like and how the service must answer them.

    v2 (PROTOCOL.md §5): XML signed with the API key, acknowledged with 200 ``SUCCESS``.
    v3 (§8.3, §8.5): JSON whose resource is AES-256-GCM encrypted with the APIv3 key, signed
    in ``Wechatpay-*`` headers by WeChat Pay's key, acknowledged with 204. Refusals are 400
    ``FAIL`` on both (XML on v2, ``{"code": "FAIL"}`` on v3).
    """

    name: str  # "v2" or "v3"
    merchant: Settings
    material: DevMaterial | None = None  # v3: the merchant's keys and WeChat Pay's

    @property
    def acknowledged_reply(self) -> tuple[int, str | None]:
        return (204, None) if self.name == "v3" else (200, "SUCCESS")

    refused_reply = (400, "FAIL")

    def endpoint(self, v2_endpoint: str) -> str:
        """The simulator's name for the endpoint a fault switch targets, on this version."""
        return V3_ENDPOINTS[v2_endpoint] if self.name == "v3" else v2_endpoint

    def service_env(self, key_dir: Path, wechat_url: str) -> dict[str, str]:
        """``WXPAY_*`` for a service process on this version; v3 key files go to ``key_dir``.
        The v2 key stays configured, as for a merchant who migrated (both notify URLs live)."""
        if self.material is None:
            return {}
        settings = on_v3(self.material, key_dir, wechat_url)
        return {f"WXPAY_{name.upper()}": str(value) for name, value in settings.items()}

    def paid_notify(self, order: PlacedOrder, transaction_id: str) -> Notify:
        """WeChat telling that ``order`` was paid, as a fresh message (new nonce)."""
        if self.material is None:
            body = notify_body(self.merchant, order, transaction_id=transaction_id)
            return Notify(order.out_trade_no, "paid", body)
        return self._v3(order, "paid", transaction_id)

    def failed_notify(self, order: PlacedOrder) -> Notify | None:
        """A failed payment attempt (v2 ``result_code=FAIL``); None on v3, which notifies only
        successes (§8.5)."""
        if self.material is not None:
            return None
        body = notify_body(self.merchant, order, result_code="FAIL", err_code="NOTENOUGH")
        return Notify(order.out_trade_no, "failed", body)

    def forged_notify(self, order: PlacedOrder, transaction_id: str, probe: bool = False) -> Notify:
        """A "paid" notify not made with WeChat's key. ``probe``, v3 only: WeChat's own
        ``WECHATPAY/SIGNTEST/`` probe (§8.3), which must be refused just the same."""
        if self.material is None:
            body = forged(notify_body(self.merchant, order, transaction_id=transaction_id))
            return Notify(order.out_trade_no, "forged", body)
        flaw = SignatureFlaw.SIGNTEST_PROBE if probe else SignatureFlaw.BAD_SIGNATURE
        return self._v3(order, "forged", transaction_id, flaw)

    @cached_property
    def _wechatpay_keys(self) -> WeChatPayKeys:
        # Loading the keys costs ~40 ms (signed_notify does it per call), signing ~0.5 ms: a
        # storm made with signed_notify took minutes, and its messages went stale (§8.3).
        assert self.material is not None
        return WeChatPayKeys(self.material.config, self.merchant.mch_id)

    def _v3(
        self, order: PlacedOrder, kind: str, transaction_id: str, flaw: SignatureFlaw | None = None
    ) -> Notify:
        """What ``signed_notify`` makes (a TRANSACTION.SUCCESS notify, signed now), with the
        keys loaded once."""
        keys = self._wechatpay_keys
        body = v3_notify_body(
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            original_type="transaction",
            resource=v3_transaction(self.merchant, order, transaction_id),
            api_v3_key=keys.config.api_v3_key,
            now=dt.datetime.now(dt.UTC),
        )
        headers = {"Content-Type": "application/json", **keys.signature_headers(body, flaw=flaw)}
        return Notify(order.out_trade_no, kind, body, "v3", headers)


def load_client(concurrency: int = 50, timeout: float = 30) -> httpx.AsyncClient:
    """httpx's API over aiohttp's pool: httpx 0.28's own pool costs ~6 ms of client CPU per
    request at 50 in flight here (aiohttp ~0.3 ms), which would make the load generator,
    not the service, the bottleneck."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(transport=transport, timeout=timeout, limits=limits, trust_env=False)


async def bounded(
    items: Sequence[T], work: Callable[[int, T], Awaitable[R]], concurrency: int
) -> list[R]:
    """``work(i, item)`` for every item, ``concurrency`` at a time, results in item order."""
    results: list[R | None] = [None] * len(items)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(items)):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            results[index] = await work(index, items[index])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


async def login_users(
    http: httpx.AsyncClient, services: Sequence[ServiceProcess], simulator: SimulatorHandle, n: int
) -> list[dict[str, str]]:
    """Authorization headers for ``n`` new users (a token works on every process)."""
    headers = []
    for i in range(n):
        code, _ = await simulator.login_code()
        url = services[i % len(services)].base_url + "/api/v1/auth/login"
        response = await http.post(url, json={"code": code})
        assert response.status_code == 200, response.text
        headers.append({"Authorization": f"Bearer {response.json()['token']}"})
    return headers


async def add_product(http: httpx.AsyncClient, service: ServiceProcess, price_fen: int) -> int:
    body = {"name": "短信套餐", "description": "短信平台-短信套餐购买", "price_fen": price_fen}
    response = await http.post(
        service.base_url + "/api/v1/admin/products", json=body, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    product_id: int = response.json()["id"]
    return product_id


async def place_orders(
    http: httpx.AsyncClient,
    services: Sequence[ServiceProcess],
    users: Sequence[dict[str, str]],
    product_id: int,
    count: int,
    concurrency: int = 20,
) -> list[PlacedOrder]:
    """``count`` orders through the API, alternating processes (so notifies do too)."""

    async def place(i: int, _: None) -> PlacedOrder:
        service = i % len(services)
        quantity = 1 + i % 3
        response = await http.post(
            services[service].base_url + "/api/v1/orders",
            json={"product_id": product_id, "quantity": quantity},
            headers=users[i % len(users)],
        )
        assert response.status_code == 201, response.text
        order = response.json()
        prepay_id = order["pay_params"]["package"].removeprefix("prepay_id=")
        return PlacedOrder(order["out_trade_no"], order["total_fee"], prepay_id, service)

    return await bounded([None] * count, place, concurrency)


async def pay_at_wechat(
    http: httpx.AsyncClient, simulator: SimulatorHandle, orders: Sequence[PlacedOrder]
) -> dict[str, str]:
    """The users pay: ``out_trade_no -> transaction_id``; the simulator then notifies."""

    async def pay(_: int, order: PlacedOrder) -> tuple[str, str]:
        payload = {"prepay_id": order.prepay_id, "result": "SUCCESS"}
        response = await http.post(simulator.url("/_control/pay"), json=payload)
        assert response.status_code == 200, response.text
        return order.out_trade_no, response.json()["transaction_id"]

    return dict(await bounded(orders, pay, 20))


async def orders_paid_at_wechat(
    http: httpx.AsyncClient,
    services: Sequence[ServiceProcess],
    simulator: SimulatorHandle,
    *,
    users: int,
    orders: int,
    paid: int,
    price_fen: int = 990,
) -> tuple[list[PlacedOrder], dict[str, str]]:
    """The usual start of a scenario: ``users`` new users place ``orders`` orders of one new
    product through ``services``; the first ``paid`` are paid at WeChat (``out_trade_no ->
    transaction_id``), whose notifies then start arriving."""
    logged_in = await login_users(http, services, simulator, users)
    product = await add_product(http, services[0], price_fen=price_fen)
    placed = await place_orders(http, services, logged_in, product, orders)
    return placed, await pay_at_wechat(http, simulator, placed[:paid])


def notify_body(settings: Settings, order: PlacedOrder, **fields: Any) -> bytes:
    """A notify for ``order`` signed as WeChat signs it (PROTOCOL.md §5), fresh nonce."""
    fields.setdefault("transaction_id", "4200000000000000000000000000")
    return payment_notify_body(
        settings, out_trade_no=order.out_trade_no, total_fee=order.total_fee, **fields
    )


def v3_transaction(merchant: Settings, order: PlacedOrder, transaction_id: str) -> dict[str, Any]:
    """The paid transaction a v3 notify carries, encrypted, for ``order`` (§8.5 step 3)."""
    total = order.total_fee
    return {
        "appid": merchant.appid, "mchid": merchant.mch_id, "out_trade_no": order.out_trade_no,
        "transaction_id": transaction_id, "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": to_rfc3339(dt.datetime.now(dt.UTC)), "payer": {"openid": "o-payer"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY",
                   "payer_currency": "CNY"},
    }  # fmt: skip


def forged(body: bytes) -> bytes:
    """The same message with a signature made without the key."""
    fields = from_xml(body)
    fields["sign"] = "0" * 32 if fields["sign"] != "0" * 32 else "1" * 32
    return to_xml(fields)


async def post_notifies(
    notifies: Sequence[Notify],
    urls: Sequence[str],
    concurrency: int = 50,
    during: Callable[[int], None] | None = None,
) -> list[Delivery]:
    """Post every notify, ``concurrency`` in flight, round-robin over ``urls``.

    ``during(done)`` is called after each reply, so a scenario can strike mid-storm.
    """
    done = 0
    async with load_client(concurrency, timeout=15) as http:

        async def deliver(i: int, notify: Notify) -> Delivery:
            nonlocal done
            try:
                response = await http.post(
                    urls[i % len(urls)] + notify.path, content=notify.body, headers=notify.headers
                )
            except httpx.HTTPError as error:
                delivery = Delivery(notify, None, type(error).__name__)
            else:
                delivery = Delivery(notify, response.status_code, _return_code(response))
            done += 1
            if during is not None:
                during(done)
            return delivery

        return await bounded(notifies, deliver, concurrency)


async def retry_until_acknowledged(
    notifies: Sequence[Notify], urls: Sequence[str], rounds: int = 20
) -> list[Delivery]:
    """WeChat's retries: re-post what was not acknowledged until it is (or rounds run out);
    returns the deliveries still not acknowledged."""
    pending = list(notifies)
    for _ in range(rounds):
        deliveries = await post_notifies(pending, urls, concurrency=20)
        pending = [d.notify for d in deliveries if not d.acknowledged]
        if not pending:
            return []
        await asyncio.sleep(0.5)
    return [d for d in deliveries if not d.acknowledged]


def _return_code(response: httpx.Response) -> str | None:
    """v2's XML ``return_code`` or v3's JSON ``code``; None for an empty body (v3's 204)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            return None
        return code if isinstance(code, str) else None
    try:
        return from_xml(response.content).get("return_code")
    except XmlRejected:
        return None


def record_figures(scenario: str, figures: dict[str, Any]) -> None:
    """Append one run's figures to var/reliability-figures.jsonl (for docs/reliability.md)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"scenario": scenario, **figures}, ensure_ascii=False) + "\n")
    print(f"\n[{scenario}] {json.dumps(figures, ensure_ascii=False)}")


def shuffled(items: list[T], seed: int) -> list[T]:
    random.Random(seed).shuffle(items)
    return items

"""Steps the scenarios share: users and orders through the service, payments at the simulator,
and signed notifies posted many at a time the way WeChat's servers post them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport

from app.config import Settings
from app.simulator.messages import payment_notify_body
from app.wechat.xmlcodec import XmlRejected, from_xml, to_xml
from tests.db import ROOT
from tests.helpers import ADMIN
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
    kind: str  # "paid", "failed" (result_code FAIL) or "forged" (bad signature)
    body: bytes


@dataclass(frozen=True)
class Delivery:
    notify: Notify
    status: int | None  # None: no HTTP answer (connection reset, timeout)
    return_code: str | None  # or, with no HTTP answer, the transport error's name

    @property
    def acknowledged(self) -> bool:
        return self.status == 200 and self.return_code == "SUCCESS"


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
                    urls[i % len(urls)] + NOTIFY_PATH,
                    content=notify.body,
                    headers={"Content-Type": "text/xml"},
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

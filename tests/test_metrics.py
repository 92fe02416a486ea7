"""``/metrics`` (issue 15, operations): scraped after real traffic, through real HTTP.

The figures live in one registry per process, so every test reads the change a scrape shows
across the traffic it makes, never an absolute count another test could have moved.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.metrics import MULTIPROC_DIR_VARIABLE, UNMATCHED_ROUTE
from app.observe import _METHODS
from app.simulator.v3keys import DevMaterial
from tests.conftest import ClientFactory, Sweep
from tests.helpers import ADMIN, add_product, create_order, login, prepay_id_of, scalar, set_time
from tests.payments.test_v3_flow import on_version, v3_simulator  # noqa: F401 (a fixture)
from tests.plugins.cluster import running_services
from tests.plugins.service import LiveFactory
from tests.plugins.simulator import SimulatorHandle
from tests.refunds.support import age_refunds, paid_order, refund, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def grew_in_all(before: Samples, after: Samples, name: str) -> float:
    """The growth of ``name`` summed over every label set it has."""
    keys = {key for key in (*before, *after) if key[0] == name}
    return sum(after.get(key, 0.0) - before.get(key, 0.0) for key in keys)


REQUESTS = "wxpay_http_request_duration_seconds"
WECHAT = "wxpay_wechat_request_duration_seconds"
GATEWAY = "wxpay_gateway_call_duration_seconds"
VERDICTS = "wxpay_notify_verdicts_total"
SWEEP_REFUNDS = "wxpay_sweep_refunds_total"


async def test_a_paid_and_refunded_order_shows_in_every_family(
    make_live_client: LiveFactory,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    sweep: Sweep,
) -> None:
    client = await make_live_client()
    before = await scrape(client)

    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    await fresh_simulator.pay(prepay_id_of(order))
    await fresh_simulator.wait_for_notifies(1, verdict="acknowledged")
    assert (await client.get(f"/api/v1/orders/{no}", headers=auth)).status_code == 200
    refund = await client.post(
        f"/api/v1/admin/orders/{no}/refunds", json={"refund_fee": 990}, headers=ADMIN
    )
    assert refund.status_code in (200, 201, 202), refund.text
    # A second order, unpaid and old enough for the sweep to ask WeChat about it.
    unpaid = await create_order(client, auth, await add_product(client))
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    sql = "UPDATE orders SET created_at = :t WHERE out_trade_no = :n"
    await set_time(engine, sql, old, n=unpaid["out_trade_no"])
    await sweep()
    after = await scrape(client)

    route = {"method": "POST", "route": "/api/v1/orders", "status": "201"}
    assert grew(before, after, f"{REQUESTS}_count", **route) == 2
    assert grew(before, after, f"{REQUESTS}_sum", **route) > 0
    shown = {"method": "GET", "route": "/api/v1/orders/{out_trade_no}", "status": "200"}
    assert grew(before, after, f"{REQUESTS}_count", **shown) == 1
    # The notify URLs are plain routes (app.inbound.NotifyRoute), timed by their path too.
    notified = {"method": "POST", "route": "/wechat/pay/notify", "status": "200"}
    assert grew(before, after, f"{REQUESTS}_count", **notified) == 1
    verdict = {"kind": "payment", "api_version": "v2", "verdict": "acknowledged"}
    assert grew(before, after, "wxpay_notify_verdicts_total", **verdict) == 1
    ok = {"outcome": "http_2xx"}
    assert grew(before, after, f"{WECHAT}_count", api="code2session", **ok) == 1
    assert grew(before, after, f"{WECHAT}_count", api="v2 /pay/unifiedorder", **ok) == 2
    assert grew(before, after, f"{WECHAT}_count", api="v2 /secapi/pay/refund", **ok) == 1
    prepay = {"api_version": "v2", "operation": "prepay", "outcome": "ok"}
    assert grew(before, after, f"{GATEWAY}_count", **prepay) == 2
    assert grew(before, after, "wxpay_sweep_orders_total", status="NOTPAY") == 1
    assert grew(before, after, "wxpay_sweep_passes_total", result="ok") == 1
    status = await scalar(engine, "SELECT status FROM refunds")
    assert value(after, "wxpay_refunds", status=status) == 1
    assert value(after, "wxpay_database_up") == 1


async def test_refunds_the_sweep_asks_about_are_counted_by_their_status_after_the_pass(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine, sweep: Sweep
) -> None:
    no = (await paid_order(client, fresh_simulator))["out_trade_no"]
    await fresh_simulator.set_fault("upstream_5xx", endpoint="refund")
    pending = (await refund(client, no, 990)).json()
    assert pending["status"] == "PENDING"
    out_refund_no = pending["out_refund_no"]
    await age_refunds(engine, minutes=2)

    # WeChat still fails refund requests: the pass leaves the refund PENDING.
    before = await scrape(client)
    still_down = await sweep()
    between = await scrape(client)
    await fresh_simulator.clear_faults()
    await age_refunds(engine, minutes=2)
    sent = await sweep()
    after = await scrape(client)

    assert still_down.refunds == {out_refund_no: "PENDING"}
    assert grew(before, between, SWEEP_REFUNDS, status="PENDING") == 1
    assert grew_in_all(before, between, SWEEP_REFUNDS) == 1
    assert sent.refunds == {out_refund_no: "PROCESSING"}
    assert grew(between, after, SWEEP_REFUNDS, status="PROCESSING") == 1
    assert grew_in_all(between, after, SWEEP_REFUNDS) == 1


# The labels each API version's traffic carries: WeChat's API as the transport names it (v3:
# method and path, ids taken out, so one API is one label) and the notify route, whose
# acknowledgement differs (v2: 200 with XML, v3: 204).
VERSION_LABELS = {
    "v2": {
        "prepay": "v2 /pay/unifiedorder",
        "query": "v2 /pay/orderquery",
        "notify": "/wechat/pay/notify",
        "acknowledged": "200",
    },
    "v3": {
        "prepay": "v3 POST /v3/pay/transactions/jsapi",
        "query": "v3 GET /v3/pay/transactions/out-trade-no/{id}",
        "notify": "/wechat/pay/v3/notify",
        "acknowledged": "204",
    },
}


@pytest.mark.parametrize("version", sorted(VERSION_LABELS))
async def test_payments_are_labelled_with_their_api_version(
    make_live_client: LiveFactory,
    v3_simulator: SimulatorHandle,  # noqa: F811 (the imported fixture)
    v3_material: DevMaterial,
    tmp_path: Path,
    version: str,
) -> None:
    client = await make_live_client(
        **on_version(version, v3_material, tmp_path, v3_simulator.base_url)
    )
    labels = VERSION_LABELS[version]
    notified = {"method": "POST", "route": labels["notify"], "status": labels["acknowledged"]}
    before = await scrape(client)

    auth = await login(client, v3_simulator)
    order = await create_order(client, auth, await add_product(client))
    no = order["out_trade_no"]
    synced = await client.get(f"/api/v1/orders/{no}?sync=true", headers=auth)
    assert synced.json()["status"] == "NOTPAY"
    await v3_simulator.pay(prepay_id_of(order))  # WeChat posts its notify in the order's version
    await v3_simulator.wait_for_notifies(1, verdict="acknowledged")

    async def notify_timed() -> bool:  # a route's timer stops only once its reply is sent
        return grew(before, await scrape(client), f"{REQUESTS}_count", **notified) > 0

    await until(notify_timed)
    after = await scrape(client)

    other = "v2" if version == "v3" else "v3"
    verdict = {"kind": "payment", "verdict": "acknowledged"}
    assert grew(before, after, VERDICTS, api_version=version, **verdict) == 1
    assert grew_in_all(before, after, VERDICTS) == 1
    assert grew(before, after, f"{REQUESTS}_count", **notified) == 1
    ok = {"outcome": "http_2xx"}
    for api in ("prepay", "query"):  # each the name of a gateway operation too
        mine, theirs = labels[api], VERSION_LABELS[other][api]
        assert grew(before, after, f"{WECHAT}_count", api=mine, **ok) == 1
        assert grew(before, after, f"{WECHAT}_sum", api=mine, **ok) > 0
        assert grew(before, after, f"{WECHAT}_count", api=theirs, **ok) == 0
        operation = {"operation": api, "outcome": "ok"}
        assert grew(before, after, f"{GATEWAY}_count", api_version=version, **operation) == 1
        assert grew(before, after, f"{GATEWAY}_count", api_version=other, **operation) == 0


async def test_every_metric_is_named_wxpay(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    names = {name for name, _ in await scrape(client)}

    assert names and all(name.startswith("wxpay_") for name in names)


async def test_paths_no_route_matched_share_one_label(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    for path in ("/no/such/1", "/no/such/2", "/wp-login.php"):
        assert (await client.get(path)).status_code == 404
    after = await scrape(client)

    missing = {"method": "GET", "route": UNMATCHED_ROUTE, "status": "404"}
    assert grew(before, after, f"{REQUESTS}_count", **missing) == 3
    assert not any("/no/such" in str(labels) for _, labels in after)


async def test_methods_a_client_invents_share_one_label(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    for method in ("FOO", "BAR-1", "PROPFIND"):
        await client.request(method, "/healthz")
    after = await scrape(client)

    other = {"method": "OTHER", "route": "/healthz", "status": "405"}
    assert grew(before, after, f"{REQUESTS}_count", **other) == 3
    assert not any(("method", "FOO") in labels for _, labels in after)
    # Nor a labelled child made for it (every child shows in a scrape): the label sets stay
    # bounded.
    methods = {
        v for name, labels in after if name.startswith(REQUESTS) for k, v in labels if k == "method"
    }
    assert methods <= {*_METHODS, "OTHER"}


async def test_a_mounted_route_is_labelled_under_its_mount(make_client: ClientFactory) -> None:
    client = await make_client(simulator_mount=True)
    before = await scrape(client)
    await client.get("/sim/_control/orders")
    after = await scrape(client)

    labels = {"method": "GET", "route": "/sim/_control/orders", "status": "200"}
    assert grew(before, after, f"{REQUESTS}_count", **labels) == 1


async def test_with_a_token_metrics_need_it(make_client: ClientFactory) -> None:
    token = "metrics-token-0123456789abcdef"
    client = await make_client(metrics_token=token)

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "METRICS_TOKEN_REQUIRED"
        assert token not in refused.text
    assert await scrape(client, Authorization=f"Bearer {token}")


async def test_metrics_switched_off_serve_nothing(make_client: ClientFactory) -> None:
    client = await make_client(metrics=False)

    assert (await client.get("/metrics")).status_code == 404


async def test_figures_add_up_across_processes(
    database_url: str, fresh_simulator: SimulatorHandle, tmp_path: Path
) -> None:
    # Two servers sharing one metrics directory, as uvicorn's workers do (the image's
    # entrypoint gives them one): requests alternate between them, so two processes for
    # certain, and a scrape of either must count both.
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {MULTIPROC_DIR_VARIABLE: str(shared)}
    with running_services(
        database_url, fresh_simulator.base_url, tmp_path, count=2, env=env
    ) as services:
        clients = [httpx.AsyncClient(base_url=s.base_url, trust_env=False) for s in services]
        for i in range(10):
            assert (await clients[i % 2].get("/healthz")).status_code == 200
        scrapes = [await scrape(c) for c in clients]
        for c in clients:
            await c.aclose()

    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    # Each scrape counts the ten checks; the first scrape also counts itself in the second.
    assert [value(s, f"{REQUESTS}_count", **labels) for s in scrapes] == [10, 10]
    metrics_route = {"method": "GET", "route": "/metrics", "status": "200"}
    assert value(scrapes[1], f"{REQUESTS}_count", **metrics_route) == 1
    assert len({p.name.split("_")[-1] for p in shared.glob("histogram_*.db")}) == 2

"""Rate limits (issue 15, item 5): logins per IP and overall, WeChat calls per order, shared by
every process through the database; 429 ``RATE_LIMITED`` with ``Retry-After``."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import utcnow
from app.errors import TooManyRequests
from app.netutil import forwarded_client
from app.ratelimits.service import Limit, RateLimiter
from tests.conftest import ClientFactory, RuntimeFactory
from tests.helpers import add_product, create_order, login, scalar, set_time
from tests.hermetic import hermetic_settings
from tests.plugins.simulator import SimulatorHandle

LOGIN = "/api/v1/auth/login"


async def try_login(
    client: httpx.AsyncClient, simulator: SimulatorHandle, ip: str | None = None
) -> httpx.Response:
    code, _ = await simulator.login_code()
    headers = {"X-Forwarded-For": ip} if ip else {}
    return await client.post(LOGIN, json={"code": code}, headers=headers)


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["retry-after"]) <= 60


# The test client connects from 127.0.0.1: trusted by its address, or (as an ingress's pods,
# whose addresses change) by its network.
@pytest.mark.parametrize("proxy", ["127.0.0.1", "127.0.0.0/8"])
async def test_logins_past_the_per_ip_limit_are_refused_before_wechat_is_asked(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine, proxy: str
) -> None:
    client = await make_client(login_rate_per_ip_per_minute=2, trusted_proxies=[proxy])

    first = [await try_login(client, fresh_simulator, "203.0.113.1") for _ in range(3)]
    elsewhere = await try_login(client, fresh_simulator, "203.0.113.2")

    assert [r.status_code for r in first[:2]] == [200, 200]
    assert_limited(first[2])
    assert elsewhere.status_code == 200  # another client IP has its own budget
    assert await scalar(engine, "SELECT count(*) FROM users") == 3  # no user for the refused


async def test_logins_past_the_overall_limit_are_refused_from_any_ip(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle
) -> None:
    client = await make_client(login_rate_per_minute=2, trusted_proxies=["127.0.0.1"])

    answers = [await try_login(client, fresh_simulator, f"203.0.113.{i}") for i in (1, 2, 3)]

    assert [r.status_code for r in answers[:2]] == [200, 200]
    assert_limited(answers[2])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.42.7.9", "203.0.113.5", "203.0.113.5"),  # an ingress pod inside the network
        ("10.42.7.9", "198.51.100.1, 203.0.113.5, 10.42.3.1", "203.0.113.5"),  # two ingress hops
        ("fd00::17", "203.0.113.5", "203.0.113.5"),
        ("192.0.2.44", "203.0.113.5", "192.0.2.44"),  # outside: the header is its own say-so
        ("10.42.7.9", "ingress", "10.42.7.9"),  # a hop that is no address is not believed
    ],
)
def test_forwarded_for_is_believed_only_from_a_peer_inside_a_trusted_network(
    peer: str, forwarded: str, client: str
) -> None:
    trusted = hermetic_settings(trusted_proxies="10.0.0.0/8, fd00::/8").trusted_proxies

    assert forwarded_client(peer, forwarded, trusted) == client


@pytest.mark.parametrize("entry", ["ingress", "10.0.0.0/33", "10.0.0", "10.0.0.0/8/8"])
def test_a_malformed_trusted_proxy_stops_start_up(entry: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        hermetic_settings(trusted_proxies=f"10.0.0.0/8, {entry}")


async def test_the_limit_is_shared_by_every_process_on_the_database(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle
) -> None:
    one = await make_client(login_rate_per_ip_per_minute=2)
    other = await make_client(login_rate_per_ip_per_minute=2)

    assert (await try_login(one, fresh_simulator)).status_code == 200
    assert (await try_login(other, fresh_simulator)).status_code == 200
    assert_limited(await try_login(one, fresh_simulator))
    assert_limited(await try_login(other, fresh_simulator))


@pytest.mark.parametrize("call", ["sync", "pay-params"])
async def test_calls_to_wechat_on_one_order_are_throttled(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    call: str,
) -> None:
    client = await make_client(order_wechat_calls_per_minute=2)
    auth = await login(client, fresh_simulator)
    product = await add_product(client)
    order, other = [await create_order(client, auth, product) for _ in range(2)]

    async def ask(no: str) -> httpx.Response:
        if call == "sync":
            return await client.get(f"/api/v1/orders/{no}?sync=true", headers=auth)
        # Fresh pay params reach WeChat only once the prepay_id has lapsed.
        past = utcnow() - dt.timedelta(minutes=1)
        sql = "UPDATE orders SET prepay_expires_at = :t WHERE out_trade_no = :n"
        await set_time(engine, sql, past, n=no)
        return await client.post(f"/api/v1/orders/{no}/pay-params", headers=auth)

    answers = [await ask(order["out_trade_no"]) for _ in range(3)]

    assert [r.status_code for r in answers[:2]] == [200, 200]
    assert_limited(answers[2])
    assert (await ask(other["out_trade_no"])).status_code == 200  # each order has its own
    plain = await client.get(f"/api/v1/orders/{order['out_trade_no']}", headers=auth)
    assert plain.status_code == 200  # reading our own record never counts


async def test_one_atomic_upsert_per_check_lets_exactly_the_limit_through(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = await make_runtime()
    limiter = RateLimiter(runtime.db)

    allowed = await asyncio.gather(*(limiter.allows("k", Limit(5)) for _ in range(20)))

    assert sum(allowed) == 5


async def test_a_new_window_starts_afresh_and_retry_after_counts_to_its_start(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = await make_runtime()
    now = [1_800_000_045.2]  # 45.2 s into a minute
    limiter = RateLimiter(runtime.db, clock=lambda: now[0])

    await limiter.check("k", Limit(1))
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check("k", Limit(1))
    now[0] += 15  # the next minute
    await limiter.check("k", Limit(1))

    assert refused.value.retry_after == 15

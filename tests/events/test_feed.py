"""Issue 13: the pull feed. It hands out every event once, in cursor order, and never skips
one that commits after an event with a higher id."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.events.repository import snapshot
from app.runtime import Runtime
from app.uow import UnitOfWork
from tests.conftest import RuntimeFactory
from tests.events.support import outbox
from tests.events.test_outbox import new_order
from tests.helpers import ADMIN, scalar
from tests.plugins.simulator import SimulatorHandle

FEED = "/api/v1/admin/events"


async def order_id(engine: AsyncEngine, order: dict[str, Any]) -> int:
    no = order["out_trade_no"]
    found: int = await scalar(engine, "SELECT id FROM orders WHERE out_trade_no = :n", n=no)
    return found


async def add_event(runtime: Runtime, oid: int, kind: str, tx: UnitOfWork | None = None) -> None:
    """An event of ``kind`` about the order as it stands (its own transaction unless given)."""
    async with AsyncExitStack() as stack:
        if tx is None:
            tx = await stack.enter_async_context(runtime.db.transaction())
        order = await tx.orders.by_id(oid)
        assert order is not None
        await tx.events.add(kind, oid, snapshot(order=order.as_dict()))


async def read_feed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await client.get(FEED, params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


async def drain(
    client: httpx.AsyncClient, after: str | None, expected: int, **params: Any
) -> tuple[list[Any], str]:
    """Read pages until ``expected`` events came. On PostgreSQL the feed holds back events
    newer than the oldest transaction running anywhere on the server (transaction ids are
    cluster-wide: another suite's open transaction delays it), so an empty page is waited on,
    never taken for the end."""
    items: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while True:
        page = await read_feed(client, **({"after": after} if after else {}), **params)
        items += page["items"]
        after = page["next_cursor"]
        if not page["items"]:
            if len(items) >= expected or time.monotonic() > deadline:
                return items, page["next_cursor"]
            await asyncio.sleep(0.2)


async def test_the_feed_pages_through_every_event_once_with_a_type_filter(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
) -> None:
    oid = await order_id(engine, await new_order(client, fresh_simulator))
    runtime: Runtime = await make_runtime()
    for n in range(5):
        await add_event(runtime, oid, "order.paid" if n % 2 else "order.closed")

    everything, cursor = await drain(client, None, 5, limit=2)
    paid, _ = await drain(client, None, 2, types="order.paid")

    stored = await outbox(engine)
    assert [e["id"] for e in everything] == [e["public_id"] for e in stored]
    assert [e["id"] for e in paid] == [stored[1]["public_id"], stored[3]["public_id"]]
    assert [e["sequence"] for e in everything] == [e["id"] for e in stored]
    assert set(everything[0]) == {"id", "type", "created_at", "sequence", "data"}
    assert (await read_feed(client, after=cursor))["items"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [({"after": "nonsense"}, "INVALID_CURSOR"), ({"types": "order.shipped"}, "INVALID_TYPES")],
)
async def test_a_bad_cursor_or_type_is_refused(
    client: httpx.AsyncClient, params: dict[str, str], code: str
) -> None:
    answer = await client.get(FEED, params=params, headers=ADMIN)
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, code)


async def test_an_event_committing_after_one_with_a_higher_id_is_not_skipped(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    make_runtime: RuntimeFactory,
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: they cannot overlap")
    oid = await order_id(engine, await new_order(client, fresh_simulator))
    runtime: Runtime = await make_runtime()
    async with AsyncExitStack() as first_stack:
        first = await first_stack.enter_async_context(runtime.db.transaction())
        await add_event(runtime, oid, "order.paid", first)  # the lower id, committed last
        async with runtime.db.transaction() as second:
            await add_event(runtime, oid, "order.closed", second)
        # The second event (the higher id) is committed and visible: a plain id cursor would
        # hand it out now and move past the first one's id for good.
        assert [e["type"] for e in await outbox(engine)] == ["order.closed"]
        early = await read_feed(client)
        assert early["items"] == []
    late, _ = await drain(client, early["next_cursor"], 2)

    assert [e["type"] for e in late] == ["order.paid", "order.closed"]

"""Refused notifies are kept small, bounded per source and pruned (issue 15, item 2): anyone
can post junk to the notify URL, and the audit trail must not grow with it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import utcnow
from app.payments.models import REFUSED_VERDICT_VALUES
from app.payments.repository import _prune, notifies
from app.simulator.v3keys import DevMaterial
from app.sweep import REFUSED_VERDICTS
from app.wechat.xmlcodec import from_xml
from tests.conftest import ClientFactory, RuntimeFactory
from tests.helpers import add_product, create_order, login, scalar, set_time
from tests.payments.test_notify import NOTIFY, signed_notify
from tests.payments.test_v3_flow import on_v3
from tests.plugins.simulator import SimulatorHandle

REFUND_NOTIFY = "/wechat/pay/refund-notify"
V3_NOTIFY, V3_REFUND_NOTIFY = "/wechat/pay/v3/notify", "/wechat/pay/v3/refund-notify"
JUNK = b"<xml><return_code>SUCCESS</return_code><junk>" + b"J" * 60_000 + b"</junk></xml>"


async def post(client: httpx.AsyncClient, path: str, body: bytes, ip: str = "") -> str:
    headers = {"content-type": "text/xml", **({"X-Forwarded-For": ip} if ip else {})}
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400
    return from_xml(response.content)["return_code"]


# Both notifies of both API versions go through one refusal path (app.inbound.Refusals).
@pytest.mark.parametrize("path", [NOTIFY, REFUND_NOTIFY, V3_NOTIFY, V3_REFUND_NOTIFY])
async def test_a_refused_body_is_kept_as_its_digest_and_a_short_excerpt(
    make_client: ClientFactory,
    engine: AsyncEngine,
    v3_material: DevMaterial,
    tmp_path: Path,
    path: str,
) -> None:
    # v3 configured beside v2 (the dev APIv2 key): the service answers on all four URLs.
    client = await make_client(**on_v3(v3_material, tmp_path, "http://127.0.0.1:9"))
    response = await client.post(path, content=JUNK, headers={"content-type": "text/xml"})
    assert response.status_code == 400
    assert b"FAIL" in response.content  # XML for v2, JSON for v3

    raw = await scalar(engine, "SELECT raw FROM payment_notifies")
    kept = json.loads(raw)
    assert kept["sha256"] == hashlib.sha256(JUNK).hexdigest()
    assert kept["bytes"] == len(JUNK)
    assert JUNK.decode().startswith(kept["excerpt"]) and len(kept["excerpt"]) == 256
    assert len(raw) < 600  # not the 8 KiB excerpt of before


async def test_refused_notifies_are_recorded_up_to_a_budget_per_source(
    make_client: ClientFactory, engine: AsyncEngine
) -> None:
    client = await make_client(
        refused_notifies_per_source_per_minute=3, trusted_proxies=["127.0.0.1"]
    )

    replies = [await post(client, NOTIFY, JUNK, "198.51.100.7") for _ in range(5)]
    replies.append(await post(client, REFUND_NOTIFY, JUNK, "198.51.100.7"))
    replies.append(await post(client, NOTIFY, JUNK, "198.51.100.8"))

    assert replies == ["FAIL"] * 7  # every sender still gets its answer
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies") == 4  # 3 + 1


async def test_a_real_payment_is_recorded_whatever_the_budget(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    client = await make_client(refused_notifies_per_source_per_minute=1)
    for _ in range(3):
        await post(client, NOTIFY, JUNK)
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client, price_fen=990))
    paid = signed_notify(
        settings, out_trade_no=order["out_trade_no"],
        transaction_id="4200000000000000000000000123", total_fee=990,
    )  # fmt: skip

    response = await client.post(NOTIFY, content=paid)

    assert from_xml(response.content)["return_code"] == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict='PAID'") == 1
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies") == 2


async def test_the_sweep_prunes_refused_notifies_past_their_retention_only(
    client: httpx.AsyncClient,
    make_runtime: RuntimeFactory,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    await post(client, NOTIFY, JUNK)
    await post(client, REFUND_NOTIFY, JUNK)
    auth = await login(client, fresh_simulator)
    order = await create_order(client, auth, await add_product(client, price_fen=990))
    body = signed_notify(
        settings, out_trade_no=order["out_trade_no"],
        transaction_id="4200000000000000000000000124", total_fee=990,
    )  # fmt: skip
    await client.post(NOTIFY, content=body)
    old = utcnow() - dt.timedelta(days=31)
    await set_time(engine, "UPDATE payment_notifies SET received_at = :t", old)
    await post(client, NOTIFY, JUNK)  # a recent one

    report = await (await make_runtime(refused_notify_retention_days=30)).sweeper.sweep_once()

    assert report.refused_notifies_pruned == 2
    # The old payment is kept for good, the recent refusal for now.
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies WHERE verdict='PAID'") == 1
    assert await scalar(engine, "SELECT count(*) FROM payment_notifies") == 2


def test_the_partial_index_covers_exactly_the_refused_verdicts() -> None:
    # Migration 0009 wrote the list down; a verdict added to REFUSED later needs a migration.
    assert set(REFUSED_VERDICT_VALUES) == REFUSED_VERDICTS


async def test_the_prune_finds_old_refusals_through_the_partial_index(engine: AsyncEngine) -> None:
    # At a million audit rows the prune was a sequential scan (docs/benchmarks.md); the index
    # only helps if the planner can prove the statement's IN list implies its predicate.
    # The prune's own WHERE, in a SELECT: the same proof for the planner, and a SELECT takes
    # a literal cutoff (a DELETE's parameters can only be bound at execution).
    where = _prune(REFUSED_VERDICTS).whereclause
    statement = select(literal_column("1")).select_from(notifies).where(where)
    literal = {"literal_binds": True}
    sql = str(
        statement.params(cutoff=utcnow()).compile(dialect=engine.dialect, compile_kwargs=literal)
    )
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = (await conn.execute(text("EXPLAIN " + sql))).scalars().all()
        else:
            plan = [str(row) for row in await conn.execute(text("EXPLAIN QUERY PLAN " + sql))]
    assert "ix_payment_notifies_refused_received_at" in " ".join(plan)

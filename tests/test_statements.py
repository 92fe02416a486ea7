"""Issue 11: on PostgreSQL every statement is compiled for asyncpg once, when the pool is made
(``$n`` text and the order of its parameters), so no request pays for compiling one."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.orders import repository as order_statements
from app.sql import StatementCache
from app.uow import STATEMENT_MODULES, PgDatabase
from tests.conftest import with_overrides
from tests.helpers import add_product, create_order, login
from tests.plugins.simulator import SimulatorHandle


def test_warming_compiles_every_module_level_statement_and_nothing_else() -> None:
    cache = StatementCache()

    compiled = cache.warm(STATEMENT_MODULES)

    assert compiled > 50
    assert order_statements._INSERT_PRICED in cache  # one alone
    assert order_statements._CLAIM["postgresql"] in cache  # the PostgreSQL one of a pair
    assert order_statements._CLAIM["sqlite"] not in cache
    assert order_statements.orders.c.status not in cache  # a column is no statement


async def test_after_start_up_a_create_order_compiles_nothing(
    settings: Settings, engine: AsyncEngine, fresh_simulator: SimulatorHandle
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("asyncpg's compiled statements (the PostgreSQL pass runs this)")
    app = create_app(with_overrides(settings, {}))
    async with app.router.lifespan_context(app):
        db = app.state.runtime.db
        assert isinstance(db, PgDatabase)
        warmed = len(db._cache)  # private: what the pool's executors compile into
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            auth = await login(client, fresh_simulator)
            order = await create_order(client, auth, await add_product(client))
            assert order["pay_params"]["package"].startswith("prepay_id=")

            assert len(db._cache) == warmed

"""The session cache (app.auth.sessioncache): a revocation takes effect in every process.

The rules of the cache itself are tested without a database; what PostgreSQL must do for it
(the trigger of migration 0010, the notifications, a dropped listener) is tested with two
instances of the service on one database, as two replicas would run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.repository import SessionRow
from app.auth.sessioncache import FORGET_ALL, SESSIONS_CHANNEL, SessionCache, SessionFreshness
from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.auth.test_sessions import bearer
from tests.conftest import with_overrides
from tests.helpers import ADMIN, wait_until
from tests.plugins.simulator import SimulatorHandle

EXPIRES = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def row(session_id: int, user_id: int = 1) -> SessionRow:
    return SessionRow(
        user_id=user_id, openid=f"o{user_id}", expires_at=EXPIRES, session_id=session_id
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_cache(ttl: float = 30.0, max_entries: int = 100) -> tuple[SessionCache, Clock]:
    clock = Clock()
    cache = SessionCache(ttl, max_entries, clock)
    cache.open()
    return cache, clock


# The rules, without a database.


def test_nothing_is_kept_until_notifications_flow_nor_after_they_stop() -> None:
    cache = SessionCache(30.0)
    cache.put(cache.ticket(), "h1", row(1))
    assert cache.get("h1") is None

    cache.open()
    cache.put(cache.ticket(), "h1", row(1))
    assert cache.get("h1") == row(1)

    cache.close()
    assert cache.get("h1") is None
    assert len(cache) == 0


def test_an_entry_is_served_for_its_lifetime_only() -> None:
    cache, clock = live_cache(ttl=30.0)
    cache.put(cache.ticket(), "h1", row(1))

    clock.now += 29.9
    assert cache.get("h1") == row(1)
    clock.now += 0.1
    assert cache.get("h1") is None
    assert len(cache) == 0


def test_a_lookup_that_overlapped_a_revocation_is_not_kept() -> None:
    cache, _ = live_cache()
    ticket = cache.ticket()  # the lookup starts, and may read the row before its deletion
    cache.forget_session(1)  # the revocation arrives while the lookup is in the database

    cache.put(ticket, "h1", row(1))

    assert cache.get("h1") is None
    cache.put(cache.ticket(), "h1", row(1))  # a later lookup is kept
    assert cache.get("h1") == row(1)


def test_forgetting_a_session_or_a_user_leaves_the_others() -> None:
    cache, _ = live_cache()
    for session_id, user_id in ((1, 7), (2, 7), (3, 8)):
        cache.put(cache.ticket(), f"h{session_id}", row(session_id, user_id))

    cache.forget_session(1)
    assert [cache.get(h) is not None for h in ("h1", "h2", "h3")] == [False, True, True]
    cache.forget_user(7)
    assert [cache.get(h) is not None for h in ("h1", "h2", "h3")] == [False, False, True]
    cache.forget_all()
    assert len(cache) == 0


def test_the_cache_is_bounded_and_drops_its_oldest_entry() -> None:
    cache, _ = live_cache(max_entries=2)
    for session_id in (1, 2, 3):
        cache.put(cache.ticket(), f"h{session_id}", row(session_id))

    assert len(cache) == 2
    assert cache.get("h1") is None
    cache.forget_session(1)  # its id is not held any more either: forgetting it is harmless
    assert cache.get("h2") == row(2) and cache.get("h3") == row(3)


async def test_on_sqlite_the_cache_is_never_live(
    make_runtime: Callable[..., Awaitable[Runtime]],
) -> None:
    runtime = await make_runtime()
    if runtime.db.dialect != "sqlite":
        pytest.skip("SQLite only: PostgreSQL notifies, and the cache goes live there")

    await asyncio.wait_for(runtime.session_freshness.run_forever(), timeout=5)

    assert not runtime.session_freshness.cache.live


# With PostgreSQL: two replicas of the service on one database.


@dataclass
class Replica:
    client: httpx.AsyncClient
    runtime: Runtime

    @property
    def freshness(self) -> SessionFreshness:
        return self.runtime.session_freshness

    async def session(self, token: str) -> httpx.Response:
        return await self.client.get("/api/v1/auth/session", headers=bearer(token))


@pytest.fixture
async def replicas(settings: Settings, engine: AsyncEngine) -> AsyncIterator[list[Replica]]:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: the notifications that keep the caches fresh")
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(2):
            app = create_app(with_overrides(settings, {}))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s")
            started.append(Replica(await stack.enter_async_context(client), app.state.runtime))
        for replica in started:
            await wait_until(lambda replica=replica: replica.freshness.cache.live)
        yield started


async def logged_in_and_cached(
    replicas: list[Replica], simulator: SimulatorHandle
) -> tuple[str, str]:
    """A token from a login on the first replica, cached by both; ``(token, openid)``."""
    code, openid = await simulator.login_code()
    login = await replicas[0].client.post("/api/v1/auth/login", json={"code": code})
    token: str = login.json()["token"]
    for replica in replicas:
        assert (await replica.session(token)).status_code == 200
        assert len(replica.freshness.cache) == 1  # the next check is answered from memory
    return token, openid


async def test_a_logout_on_one_replica_ends_the_session_on_the_other(
    replicas: list[Replica], fresh_simulator: SimulatorHandle
) -> None:
    token, _ = await logged_in_and_cached(replicas, fresh_simulator)

    assert (
        await replicas[0].client.post("/api/v1/auth/logout", headers=bearer(token))
    ).status_code == 204
    assert (await replicas[0].session(token)).status_code == 401  # at once where it was asked
    await replicas[1].freshness.caught_up()

    answer = await replicas[1].session(token)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "SESSION_INVALID"


async def test_the_admins_revoke_reaches_every_replica(
    replicas: list[Replica], fresh_simulator: SimulatorHandle
) -> None:
    token, openid = await logged_in_and_cached(replicas, fresh_simulator)

    path = f"/api/v1/admin/users/{openid}/sessions"
    assert (await replicas[1].client.delete(path, headers=ADMIN)).json()["revoked"] == 1
    await replicas[0].freshness.caught_up()

    assert [(await r.session(token)).status_code for r in replicas] == [401, 401]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM auth_sessions",
        "TRUNCATE auth_sessions CASCADE",
        "UPDATE auth_sessions SET expires_at = now() - interval '1 second'",
    ],
)
async def test_an_operators_sql_reaches_every_replica(
    replicas: list[Replica], fresh_simulator: SimulatorHandle, engine: AsyncEngine, statement: str
) -> None:
    token, _ = await logged_in_and_cached(replicas, fresh_simulator)

    async with engine.begin() as conn:
        await conn.execute(text(statement))
    for replica in replicas:
        await replica.freshness.caught_up()

    answers = [await replica.session(token) for replica in replicas]
    assert [a.status_code for a in answers] == [401, 401]
    expected = "SESSION_EXPIRED" if statement.startswith("UPDATE") else "SESSION_INVALID"
    assert {a.json()["error"]["code"] for a in answers} == {expected}


async def test_a_replica_that_stops_hearing_keeps_nothing_until_it_hears_again(
    replicas: list[Replica], fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    token, _ = await logged_in_and_cached(replicas, fresh_simulator)
    async with engine.begin() as conn:  # every listener of this database drops, as in a failover
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": f"wxpay listen {SESSIONS_CHANNEL}"},
        )
    for replica in replicas:
        await wait_until(lambda replica=replica: not replica.freshness.cache.live)
        assert (await replica.session(token)).status_code == 200
        assert len(replica.freshness.cache) == 0  # answered by the database, and not kept

    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM auth_sessions"))
    # No waiting for a notification: with nothing kept, the deletion is seen at once.
    assert [(await r.session(token)).status_code for r in replicas] == [401, 401]

    for replica in replicas:  # and each hears again, on its own
        await wait_until(lambda replica=replica: replica.freshness.cache.live)


async def test_the_trigger_speaks_of_live_sessions_only(
    database_url: str, engine: AsyncEngine
) -> None:
    """Migration 0010 against the cache's constants: an update or a deletion of a live
    session names it, the clean-up of expired ones says nothing, a TRUNCATE says forget all."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no notifications")
    heard: asyncio.Queue[str] = asyncio.Queue()
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(SESSIONS_CHANNEL, lambda *args: heard.put_nowait(args[3]))
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (openid, session_key_sealed, created_at, updated_at)"
                    " VALUES ('o1', 'x', now(), now())"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO auth_sessions (id, user_id, token_hash, expires_at, created_at)"
                    " VALUES"
                    " (11, (SELECT id FROM users), 'a', now() + interval '1 hour', now()),"
                    " (12, (SELECT id FROM users), 'b', now() + interval '1 hour', now()),"
                    " (13, (SELECT id FROM users), 'c', now() - interval '1 hour', now())"
                )
            )
        for statement in (
            "UPDATE auth_sessions SET expires_at = now() WHERE id = 11",
            "DELETE FROM auth_sessions WHERE id IN (12, 13)",
            "TRUNCATE auth_sessions CASCADE",
        ):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        said = [await asyncio.wait_for(heard.get(), timeout=5) for _ in range(3)]
        assert said == ["11", "12", FORGET_ALL]
        assert heard.empty()
    finally:
        await listener.close()

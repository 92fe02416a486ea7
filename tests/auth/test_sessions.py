"""Sessions can be revoked (issue 15, item 9): logout ends one token, the admin ends all of a
user's; the token response may not be cached."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.auth.test_login import login
from tests.helpers import ADMIN, scalar
from tests.plugins.simulator import SimulatorHandle


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_token_response_may_not_be_stored_by_any_cache(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    code, _ = await fresh_simulator.login_code()

    response = await client.post("/api/v1/auth/login", json={"code": code})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


async def test_logout_revokes_this_token_and_no_other(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    phone, openid = await login(client, fresh_simulator)
    code, _ = await fresh_simulator.login_code(openid)  # the same user on a second device
    tablet = (await client.post("/api/v1/auth/login", json={"code": code})).json()["token"]

    response = await client.post("/api/v1/auth/logout", headers=bearer(phone))

    assert response.status_code == 204
    revoked = await client.get("/api/v1/auth/session", headers=bearer(phone))
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "SESSION_INVALID"
    assert (await client.get("/api/v1/auth/session", headers=bearer(tablet))).status_code == 200
    assert await scalar(engine, "SELECT count(*) FROM auth_sessions") == 1


async def test_logout_without_a_valid_token_is_401_and_changes_nothing(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    await login(client, fresh_simulator)

    missing = await client.post("/api/v1/auth/logout")
    unknown = await client.post("/api/v1/auth/logout", headers=bearer("not-a-token"))

    assert missing.json()["error"]["code"] == "SESSION_MISSING"
    assert unknown.json()["error"]["code"] == "SESSION_INVALID"
    assert await scalar(engine, "SELECT count(*) FROM auth_sessions") == 1


async def test_the_admin_revokes_every_session_of_one_user(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    first, openid = await login(client, fresh_simulator)
    code, _ = await fresh_simulator.login_code(openid)
    second = (await client.post("/api/v1/auth/login", json={"code": code})).json()["token"]
    other, _ = await login(client, fresh_simulator)

    response = await client.delete(f"/api/v1/admin/users/{openid}/sessions", headers=ADMIN)

    assert response.status_code == 200
    assert response.json() == {"openid": openid, "revoked": 2}
    for token in (first, second):
        assert (await client.get("/api/v1/auth/session", headers=bearer(token))).status_code == 401
    assert (await client.get("/api/v1/auth/session", headers=bearer(other))).status_code == 200


async def test_revoking_sessions_needs_the_admin_token_and_a_known_user(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    token, openid = await login(client, fresh_simulator)

    anyone = await client.delete(f"/api/v1/admin/users/{openid}/sessions", headers=bearer(token))
    unknown = await client.delete("/api/v1/admin/users/oNOBODY/sessions", headers=ADMIN)

    assert anyone.status_code == 403
    assert anyone.json()["error"]["code"] == "ADMIN_TOKEN_INVALID"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NOT_FOUND"
    assert await scalar(engine, "SELECT count(*) FROM auth_sessions") == 1

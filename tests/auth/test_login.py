"""Login and session (issue 2), against the simulator's code2session over real HTTP."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.runtime import build_auth_keys
from tests.conftest import ClientFactory
from tests.helpers import set_time
from tests.plugins.simulator import SimulatorHandle


async def login(client: httpx.AsyncClient, simulator: SimulatorHandle) -> tuple[str, str]:
    code, openid = await simulator.login_code()
    response = await client.post("/api/v1/auth/login", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()["token"], openid


async def stored_session_key(engine: AsyncEngine, settings: Settings, openid: str) -> str:
    async with engine.connect() as conn:
        sealed = (
            await conn.execute(
                text("SELECT session_key_sealed FROM users WHERE openid = :o"), {"o": openid}
            )
        ).scalar_one()
    return build_auth_keys(settings).box.open(sealed, context=openid)


async def test_login_issues_a_token_that_opens_a_session(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    code, openid = await fresh_simulator.login_code()

    response = await client.post("/api/v1/auth/login", json={"code": code})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expires_in"}
    assert body["expires_in"] == 86_400
    session = await client.get(
        "/api/v1/auth/session", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert session.status_code == 200
    assert session.json()["openid"] == openid
    assert 86_300 < session.json()["expires_in"] <= 86_400


async def test_login_code_is_single_use(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    # PROTOCOL.md §1.1: a wx.login code is single-use; reuse gives 40163.
    code, _ = await fresh_simulator.login_code()
    first = await client.post("/api/v1/auth/login", json={"code": code})
    second = await client.post("/api/v1/auth/login", json={"code": code})

    assert first.status_code == 200
    assert second.status_code == 401
    assert second.json()["error"]["code"] == "INVALID_CODE"


async def test_unknown_code_is_refused(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    response = await client.post("/api/v1/auth/login", json={"code": "not-a-real-code"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CODE"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar() == 0
        assert (await conn.execute(text("SELECT count(*) FROM auth_sessions"))).scalar() == 0


async def test_code_older_than_five_minutes_is_refused(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    # PROTOCOL.md §1.1: codes are valid for five minutes.
    code, _ = await fresh_simulator.login_code()
    await fresh_simulator.advance_clock(301)

    response = await client.post("/api/v1/auth/login", json={"code": code})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CODE"


@pytest.mark.parametrize("payload", [{}, {"code": ""}, {"code": 123}, {"code": "x" * 200}])
async def test_malformed_login_body_is_a_validation_error(
    client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    response = await client.post("/api/v1/auth/login", json=payload)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_request_without_token_is_told_to_log_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/auth/session")

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "SESSION_MISSING"
    assert "wx.login" in error["message"]


async def test_tampered_token_is_refused(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle
) -> None:
    token, _ = await login(client, fresh_simulator)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")

    response = await client.get(
        "/api/v1/auth/session", headers={"Authorization": f"Bearer {tampered}"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "SESSION_INVALID"


async def test_expired_token_is_told_to_log_in_again(
    client: httpx.AsyncClient, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    token, _ = await login(client, fresh_simulator)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await set_time(engine, "UPDATE auth_sessions SET expires_at = :t", past)

    response = await client.get(
        "/api/v1/auth/session", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "SESSION_EXPIRED"
    assert "wx.login" in response.json()["error"]["message"]


async def test_new_login_replaces_the_session_key(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    # PROTOCOL.md §1.3: WeChat keeps one session_key per user; each login may rotate it.
    _, openid = await login(client, fresh_simulator)
    first_key = await stored_session_key(engine, settings, openid)
    code, _ = await fresh_simulator.login_code(openid=openid)
    await client.post("/api/v1/auth/login", json={"code": code})

    second_key = await stored_session_key(engine, settings, openid)

    assert second_key != first_key
    async with engine.connect() as conn:
        users = (await conn.execute(text("SELECT count(*) FROM users"))).scalar()
    assert users == 1


async def test_session_key_never_reaches_a_response_or_a_log_line(
    client: httpx.AsyncClient,
    fresh_simulator: SimulatorHandle,
    engine: AsyncEngine,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    code, openid = await fresh_simulator.login_code()
    login_response = await client.post("/api/v1/auth/login", json={"code": code})
    token = login_response.json()["token"]
    session_response = await client.get(
        "/api/v1/auth/session", headers={"Authorization": f"Bearer {token}"}
    )
    session_key = await stored_session_key(engine, settings, openid)

    assert len(session_key) == 24
    for response in (login_response, session_response):
        assert session_key not in response.text
    assert session_key not in caplog.text
    assert settings.app_secret.get_secret_value() not in caplog.text


async def test_login_with_wechat_down_is_503_and_stores_nothing(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, engine: AsyncEngine
) -> None:
    client = await make_client(miniprogram_api_base="http://127.0.0.1:9")
    code, _ = await fresh_simulator.login_code()

    response = await client.post("/api/v1/auth/login", json={"code": code})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "WECHAT_UNAVAILABLE"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar() == 0


async def test_login_when_wechat_times_out_is_503(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle
) -> None:
    client = await make_client(http_read_timeout=0.2)
    await fresh_simulator.set_fault("upstream_timeout", endpoint="jscode2session", seconds=1)
    code, _ = await fresh_simulator.login_code()

    response = await client.post("/api/v1/auth/login", json={"code": code})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "WECHAT_UNAVAILABLE"


def code2session_answering(status: int, body: bytes) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/sns/jscode2session"
        return httpx.Response(status, content=body)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("errcode", "status", "code", "retry_after"),
    [
        # PROTOCOL.md §1.2: "api minute-quota reach limit mustslower retry next minute"; like
        # every 429 the answer carries Retry-After, and the next minute starts within 60 s.
        (45011, 429, "RATE_LIMITED", "60"),
        (40226, 403, "LOGIN_BLOCKED", None),  # risk control; do not retry
        (-1, 503, "WECHAT_UNAVAILABLE", None),  # system busy
        (40013, 502, "WECHAT_REJECTED", None),  # invalid appid: our configuration, WeChat's words
    ],
)
async def test_code2session_errcodes_map_to_clear_errors(
    make_client: ClientFactory,
    engine: AsyncEngine,
    errcode: int,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    body = f'{{"errcode": {errcode}, "errmsg": "simulated {errcode}"}}'.encode()
    client = await make_client(transport=code2session_answering(200, body))

    response = await client.post("/api/v1/auth/login", json={"code": "abc"})

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers.get("Retry-After") == retry_after
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar() == 0


@pytest.mark.parametrize(
    ("status", "body"), [(502, b"bad gateway"), (200, b"<html>not json</html>"), (200, b"{}")]
)
async def test_unusable_code2session_answers_are_503(
    make_client: ClientFactory, status: int, body: bytes
) -> None:
    client = await make_client(transport=code2session_answering(status, body))

    response = await client.post("/api/v1/auth/login", json={"code": "abc"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "WECHAT_UNAVAILABLE"

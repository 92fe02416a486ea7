"""``GET /sns/jscode2session`` against codes minted like ``wx.login`` (PROTOCOL.md §1)."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.plugins.simulator import SimulatorHandle


async def exchange(simulator: SimulatorHandle, code: str, **override: str) -> dict[str, Any]:
    settings = simulator.settings
    query = {
        "appid": settings.appid,
        "secret": settings.app_secret.get_secret_value(),
        "js_code": code,
        "grant_type": "authorization_code",
        **override,
    }
    query = {name: value for name, value in query.items() if value}
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(simulator.url("/sns/jscode2session"), params=query)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_fresh_code_gives_the_users_openid_and_a_16_byte_session_key(
    fresh_simulator: SimulatorHandle,
) -> None:
    code, openid = await fresh_simulator.login_code()

    answer = await exchange(fresh_simulator, code)

    assert answer["openid"] == openid
    assert len(answer["session_key"]) == 24
    assert len(base64.b64decode(answer["session_key"])) == 16
    assert "errcode" not in answer


async def test_minted_openids_look_like_wechats(fresh_simulator: SimulatorHandle) -> None:
    _, first = await fresh_simulator.login_code()
    _, second = await fresh_simulator.login_code()

    assert len(first) == len(second) == 28
    assert first.startswith("o") and first[:6] == second[:6]  # one prefix per mini-program
    assert first != second


async def test_a_given_openid_is_kept(fresh_simulator: SimulatorHandle) -> None:
    code, openid = await fresh_simulator.login_code("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")

    answer = await exchange(fresh_simulator, code)

    assert openid == answer["openid"] == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


async def test_each_exchange_rotates_the_session_key(fresh_simulator: SimulatorHandle) -> None:
    first_code, openid = await fresh_simulator.login_code()
    second_code, _ = await fresh_simulator.login_code(openid)

    first = await exchange(fresh_simulator, first_code)
    second = await exchange(fresh_simulator, second_code)

    assert first["openid"] == second["openid"]
    assert first["session_key"] != second["session_key"]


async def test_a_used_code_is_refused_with_40163(fresh_simulator: SimulatorHandle) -> None:
    code, _ = await fresh_simulator.login_code()
    await exchange(fresh_simulator, code)

    answer = await exchange(fresh_simulator, code)

    assert answer["errcode"] == 40163
    assert answer["errmsg"].startswith("code been used, rid: ")


async def test_an_unknown_code_is_refused_with_40029(fresh_simulator: SimulatorHandle) -> None:
    answer = await exchange(fresh_simulator, "0" * 32)

    assert answer["errcode"] == 40029


async def test_a_code_older_than_five_minutes_is_refused_with_40029(
    fresh_simulator: SimulatorHandle,
) -> None:
    code, _ = await fresh_simulator.login_code()
    await fresh_simulator.advance_clock(5 * 60 + 1)

    answer = await exchange(fresh_simulator, code)

    assert answer["errcode"] == 40029


async def test_a_code_younger_than_five_minutes_still_works(
    fresh_simulator: SimulatorHandle,
) -> None:
    code, _ = await fresh_simulator.login_code()
    await fresh_simulator.advance_clock(4 * 60 + 59)

    answer = await exchange(fresh_simulator, code)

    assert "openid" in answer


async def test_a_wrong_appid_is_refused_with_40013_and_leaves_the_code_usable(
    fresh_simulator: SimulatorHandle,
) -> None:
    code, _ = await fresh_simulator.login_code()

    refused = await exchange(fresh_simulator, code, appid="wx0000000000000000")
    accepted = await exchange(fresh_simulator, code)

    assert refused["errcode"] == 40013
    assert "openid" in accepted


async def test_a_wrong_secret_is_refused_with_40125(fresh_simulator: SimulatorHandle) -> None:
    code, _ = await fresh_simulator.login_code()

    answer = await exchange(fresh_simulator, code, secret="not-the-secret")

    assert answer["errcode"] == 40125


async def test_a_wrong_grant_type_is_refused_with_40002(fresh_simulator: SimulatorHandle) -> None:
    code, _ = await fresh_simulator.login_code()

    answer = await exchange(fresh_simulator, code, grant_type="client_credential")

    assert answer["errcode"] == 40002


async def test_missing_parameters_get_their_own_errcodes(fresh_simulator: SimulatorHandle) -> None:
    code, _ = await fresh_simulator.login_code()

    no_appid = await exchange(fresh_simulator, code, appid="")
    no_secret = await exchange(fresh_simulator, code, secret="")
    no_code = await exchange(fresh_simulator, "")

    assert (no_appid["errcode"], no_secret["errcode"], no_code["errcode"]) == (41002, 41004, 41008)


async def test_reset_forgets_minted_codes(fresh_simulator: SimulatorHandle) -> None:
    code, _ = await fresh_simulator.login_code()
    await fresh_simulator.reset()

    answer = await exchange(fresh_simulator, code)

    assert answer["errcode"] == 40029

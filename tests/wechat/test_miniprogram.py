"""code2session (PROTOCOL.md §1.2) against a scripted WeChat behind httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.miniprogram import MiniProgramClient
from tests.wechat.conftest import APPID, ScriptedWeChat

SECRET = "mini-program-app-secret-0123456789"
SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="

MiniFactory = Callable[[ScriptedWeChat], MiniProgramClient]


def answer(payload: object, content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(
        200, content=json.dumps(payload).encode(), headers={"Content-Type": content_type}
    )


@pytest.fixture
async def make_mini() -> AsyncIterator[MiniFactory]:
    opened: list[httpx.AsyncClient] = []

    def factory(script: ScriptedWeChat) -> MiniProgramClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        opened.append(http)
        return MiniProgramClient(http, api_base="https://api.wx.test/", appid=APPID, secret=SECRET)

    yield factory
    for http in opened:
        await http.aclose()


async def test_code2session_sends_the_documented_query(make_mini: MiniFactory) -> None:
    wechat = ScriptedWeChat(answer({"openid": "o1", "session_key": SESSION_KEY}))
    await make_mini(wechat).code2session("the-code")

    [request] = wechat.requests
    assert request.method == "GET"
    assert request.url.path == "/sns/jscode2session"
    assert dict(request.url.params) == {
        "appid": APPID,
        "secret": SECRET,
        "js_code": "the-code",
        "grant_type": "authorization_code",
    }


async def test_success_returns_openid_session_key_and_unionid(make_mini: MiniFactory) -> None:
    wechat = ScriptedWeChat(
        answer({"openid": "o1", "session_key": SESSION_KEY, "unionid": "u1", "errcode": 0})
    )
    result = await make_mini(wechat).code2session("c")
    assert (result.openid, result.unionid) == ("o1", "u1")
    assert result.session_key.get_secret_value() == SESSION_KEY
    assert SESSION_KEY not in repr(result)


async def test_unionid_is_none_when_not_bound(make_mini: MiniFactory) -> None:
    wechat = ScriptedWeChat(answer({"openid": "o1", "session_key": SESSION_KEY}))
    assert (await make_mini(wechat).code2session("c")).unionid is None


async def test_json_is_read_whatever_the_content_type(make_mini: MiniFactory) -> None:
    # §1.2 practical notes: the endpoint has been seen answering JSON as text/plain.
    wechat = ScriptedWeChat(answer({"openid": "o1", "session_key": SESSION_KEY}, "text/plain"))
    assert (await make_mini(wechat).code2session("c")).openid == "o1"


@pytest.mark.parametrize(
    ("errcode", "errmsg"),
    [
        (40029, "invalid code"),
        (40163, "code been used"),
        (45011, "api minute-quota reach limit mustslower retry next minute"),
        (40226, "code blocked"),
        (40013, "invalid appid"),
    ],
)
async def test_errcodes_are_final_rejections_carrying_the_code(
    make_mini: MiniFactory, errcode: int, errmsg: str
) -> None:
    wechat = ScriptedWeChat(answer({"errcode": errcode, "errmsg": errmsg}))
    with pytest.raises(WeChatRejected) as caught:
        await make_mini(wechat).code2session("c")
    assert caught.value.err_code == str(errcode)
    assert caught.value.reason == errmsg
    assert len(wechat.requests) == 1  # a code is single-use: never re-sent


@pytest.mark.parametrize(
    "failure",
    [
        answer({"errcode": -1, "errmsg": "system error"}),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
        httpx.Response(500),
        httpx.Response(200, content=b"<html>not json</html>"),
        answer(["not", "an", "object"]),
        answer({"errcode": 0, "errmsg": "ok"}),  # success without an openid
    ],
    ids=["system-busy", "timeout", "connect", "500", "not-json", "json-array", "no-openid"],
)
async def test_failures_that_are_not_a_verdict_are_unavailable(
    make_mini: MiniFactory, failure: httpx.Response | Exception
) -> None:
    wechat = ScriptedWeChat(failure)
    with pytest.raises(WeChatUnavailable):
        await make_mini(wechat).code2session("c")
    assert len(wechat.requests) == 1


async def test_system_busy_keeps_its_errcode(make_mini: MiniFactory) -> None:
    wechat = ScriptedWeChat(answer({"errcode": -1, "errmsg": "system error"}))
    with pytest.raises(WeChatUnavailable) as caught:
        await make_mini(wechat).code2session("c")
    assert caught.value.err_code == "-1"


async def test_a_transport_error_quoting_the_url_does_not_leak_the_secret(
    make_mini: MiniFactory,
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        client = MiniProgramClient(http, api_base="https://api.wx.test", appid=APPID, secret=SECRET)
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code2session("c")
    error = caught.value
    assert SECRET not in str(error) + repr(error) + repr(client)
    # Not chained either, so a logged traceback cannot quote the URL.
    assert error.__cause__ is None and error.__suppress_context__

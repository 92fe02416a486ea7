"""Fixtures for the WeChat adapter: a scripted WeChat Pay behind ``httpx.MockTransport``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.wechat.client import WeChatPayClient
from app.wechat.retry import RetryPolicy
from app.wechat.signing import SignType
from app.wechat.xmlcodec import to_signed_xml

# PROTOCOL.md §10 L: our self-generated fixtures use this APIv2 key and these ids.
API_KEY = "0123456789abcdefghijklmnopqrstuv"
APPID = "wx1234567890abcdef"
MCH_ID = "1900000109"
API_BASE = "https://api.mch.test"

Reply = httpx.Response | Exception | bytes


def signed_reply(key: str = API_KEY, sign_type: SignType = SignType.MD5, **fields: object) -> bytes:
    """A WeChat Pay answer with both codes SUCCESS unless overridden, signed like WeChat."""
    base: dict[str, object] = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": APPID,
        "mch_id": MCH_ID,
        "nonce_str": "IITRi8Iabbblz1Jc",
        "result_code": "SUCCESS",
    }
    return to_signed_xml({**base, **fields}, key, sign_type)


def business_error(err_code: str, err_code_des: str) -> bytes:
    return signed_reply(result_code="FAIL", err_code=err_code, err_code_des=err_code_des)


class ScriptedWeChat:
    """A ``MockTransport`` handler that answers requests with scripted replies, in order.

    The last reply repeats once the script runs out. Every request is kept for assertions.
    """

    def __init__(self, *replies: Reply) -> None:
        assert replies, "script at least one reply"
        self._replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, bytes):
            return httpx.Response(200, content=reply, headers={"Content-Type": "text/plain"})
        return reply


PayClientFactory = Callable[..., WeChatPayClient]


@pytest.fixture
async def make_pay_client() -> AsyncIterator[PayClientFactory]:
    """Build a ``WeChatPayClient`` over scripted transports; backoff is zero unless given."""
    opened: list[httpx.AsyncClient] = []

    def factory(
        script: ScriptedWeChat,
        *,
        refund_script: ScriptedWeChat | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> WeChatPayClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        opened.append(http)
        refund_http = None
        if refund_script is not None:
            refund_http = httpx.AsyncClient(transport=httpx.MockTransport(refund_script))
            opened.append(refund_http)
        settings: dict[str, Any] = {
            "api_base": API_BASE,
            "appid": APPID,
            "mch_id": MCH_ID,
            "api_key": API_KEY,
            "retry": retry or RetryPolicy(max_attempts=3, base_delay=0, max_delay=0),
            "refund_http": refund_http,
            **options,
        }
        return WeChatPayClient(http, **settings)

    yield factory
    for http in opened:
        await http.aclose()

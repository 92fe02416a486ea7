"""The mini-program login exchange, ``auth.code2Session`` (PROTOCOL.md §1.2).

Same error style as the pay client: ``-1``, timeouts, 5xx and non-JSON bodies are
``WeChatUnavailable``; every other ``errcode`` is ``WeChatRejected`` with ``err_code`` set to
it as text (``"40029"``, ``"40163"``, ``"45011"``, ``"40226"``, ...). Never retried here: the
code is single-use and may already be consumed, so the client must call ``wx.login`` again.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from app.wechat.errors import WeChatRejected, WeChatUnavailable
from app.wechat.transport import json_object, send, success_body

_WHAT = "code2session"
_MAX_BYTES = 16 * 1024  # the answer is a few hundred bytes of JSON
_SYSTEM_BUSY = "-1"


@dataclass(frozen=True, slots=True)
class Code2SessionResult:
    """``session_key`` stays on the server, never in logs or responses (§1.4)."""

    openid: str
    session_key: SecretStr
    unionid: str | None = None


class MiniProgramClient:
    def __init__(
        self, http: httpx.AsyncClient, *, api_base: str, appid: str, secret: str | SecretStr
    ) -> None:
        self._http = http
        self._url = api_base.rstrip("/") + "/sns/jscode2session"
        self.appid = appid
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)

    def __repr__(self) -> str:
        return f"MiniProgramClient(url={self._url!r}, appid={self.appid!r})"

    async def code2session(self, code: str) -> Code2SessionResult:
        """Exchange a ``wx.login`` code for ``openid``/``session_key`` (``unionid`` if bound).

        Success is ``errcode`` absent or 0 with a non-empty ``openid``; the body is parsed as
        JSON whatever its ``Content-Type`` (§1.2 practical notes).
        """
        params = {
            "appid": self.appid,
            "secret": self._secret.get_secret_value(),
            "js_code": code,
            "grant_type": "authorization_code",
        }
        reply = await send(
            self._http,
            "GET",
            self._url,
            params=params,
            max_bytes=_MAX_BYTES,
            what=_WHAT,
            api="code2session",
        )
        return _result(json_object(success_body(reply, _WHAT), _WHAT))


def _result(payload: dict[str, object]) -> Code2SessionResult:
    # A number in practice; compared as text so "40029" and 40029 read the same.
    errcode = str(payload.get("errcode") or 0)
    errmsg = payload.get("errmsg")
    message = errmsg if isinstance(errmsg, str) and errmsg else None
    if errcode == _SYSTEM_BUSY:
        raise WeChatUnavailable(message or f"{_WHAT}: system busy", err_code=errcode)
    if errcode != "0":
        raise WeChatRejected(err_code=errcode, err_code_des=message)
    openid, session_key, unionid = (payload.get(k) for k in ("openid", "session_key", "unionid"))
    if not (isinstance(openid, str) and openid and isinstance(session_key, str) and session_key):
        raise WeChatUnavailable(f"{_WHAT} answered without openid and session_key")
    return Code2SessionResult(
        openid=openid,
        session_key=SecretStr(session_key),
        unionid=unionid if isinstance(unionid, str) and unionid else None,
    )

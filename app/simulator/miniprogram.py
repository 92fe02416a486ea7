"""``GET /sns/jscode2session`` and the login codes ``wx.login`` would hand out (PROTOCOL.md §1)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.ids import new_login_code, new_openid, new_request_id, new_session_key
from app.simulator.state import LoginCode, SimState

CODE_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class MiniProgramError(Exception):
    errcode: int
    errmsg: str

    def to_json(self) -> dict[str, object]:
        # WeChat tags every error message with a request id.
        return {"errcode": self.errcode, "errmsg": f"{self.errmsg}, rid: {new_request_id()}"}


class MiniProgram:
    def __init__(self, config: SimulatorConfig, state: SimState, clock: SimClock) -> None:
        self._config = config
        self._state = state
        self._clock = clock

    def mint_code(self, openid: str | None = None) -> LoginCode:
        """What ``wx.login`` gives a user: a fresh single-use code (and the user, if new)."""
        openid = openid or new_openid(self._config.appid)
        self._state.session_keys.setdefault(openid, new_session_key())
        code = LoginCode(code=new_login_code(), openid=openid, issued_at=self._clock.now())
        self._state.codes[code.code] = code
        return code

    def code2session(self, query: dict[str, str]) -> dict[str, object]:
        """Exchange a code for ``openid`` + ``session_key``.

        Rules: every parameter present (41002/41004/41008); appid and secret right
        (40013/40125); ``grant_type=authorization_code`` (40002); the code known and younger
        than 5 minutes (40029) and not used before (40163). Each exchange rotates the user's
        ``session_key``, as a new ``wx.login`` does.
        """
        self._check_credentials(query)
        code = self._take_code(query["js_code"])
        session_key = new_session_key()
        self._state.session_keys[code.openid] = session_key
        return {"session_key": session_key, "openid": code.openid}

    def _check_credentials(self, query: dict[str, str]) -> None:
        for name, errcode in (("appid", 41002), ("secret", 41004), ("js_code", 41008)):
            if not query.get(name):
                raise MiniProgramError(errcode, f"{name} missing")
        if query["appid"] != self._config.appid:
            raise MiniProgramError(40013, "invalid appid")
        if not hmac.compare_digest(query["secret"].encode(), self._config.app_secret.encode()):
            raise MiniProgramError(40125, "invalid appsecret")
        if query.get("grant_type") != "authorization_code":
            raise MiniProgramError(40002, "invalid grant_type")

    def _take_code(self, value: str) -> LoginCode:
        code = self._state.codes.get(value)
        if code is None or self._clock.now() - code.issued_at > CODE_LIFETIME:
            raise MiniProgramError(40029, "invalid code")
        if code.used:
            raise MiniProgramError(40163, "code been used")
        code.used = True
        return code

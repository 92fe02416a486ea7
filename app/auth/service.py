"""Login and session rules.

- A login exchanges a single-use ``wx.login`` code for ``openid``/``session_key`` (code2session),
  upserts the user, replaces their ``session_key`` (sealed at rest) and issues our own opaque token.
- The client only ever holds that token; ``session_key`` never leaves the server (PROTOCOL.md §1.4).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.pgrepository import AsyncpgAuthRepository
from app.auth.repository import AuthRepository, SessionLookup
from app.db import PgPool, single_statements, utcnow
from app.errors import (
    InvalidLoginCode,
    LoginBlocked,
    RateLimited,
    SessionExpired,
    SessionInvalid,
)
from app.security import SecretBox, hash_token, new_token
from app.wechat.errors import WeChatRejected
from app.wechat.miniprogram import MiniProgramClient

logger = logging.getLogger(__name__)

# code2session errcodes that mean "this code is no good": invalid, or already used.
_BAD_CODE = {"40029", "40163"}
_RATE_LIMITED = "45011"
_RISK_BLOCKED = "40226"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: int
    openid: str
    session_expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AuthKeys:
    """The server-side keys the auth rules need, derived once at start-up."""

    token_key: bytes
    box: SecretBox
    ttl_seconds: int


class AuthService:
    """Built once at start-up; ``pool`` (PostgreSQL) serves the per-request session lookup."""

    def __init__(self, engine: AsyncEngine, keys: AuthKeys, pool: PgPool | None = None) -> None:
        self._engine = engine
        self._keys = keys
        self._lookup: Callable[[], AbstractAsyncContextManager[SessionLookup]] = single_statements(
            engine, pool, core=AuthRepository, pg=AsyncpgAuthRepository
        )

    async def login(self, code: str, wechat: MiniProgramClient) -> IssuedToken:
        """Exchange a ``wx.login`` code for our own bearer token.

        WeChat is called before any transaction opens; nothing is stored when it fails.
        """
        try:
            result = await wechat.code2session(code)
        except WeChatRejected as exc:
            raise _login_error(exc) from exc
        sealed = self._keys.box.seal(result.session_key.get_secret_value(), context=result.openid)
        token = new_token()
        expires_at = utcnow() + dt.timedelta(seconds=self._keys.ttl_seconds)
        async with self._engine.begin() as conn:
            repo = AuthRepository(conn)
            user_id = await repo.upsert_user(result.openid, result.unionid, sealed)
            await repo.add_session(user_id, hash_token(token, self._keys.token_key), expires_at)
        logger.info("login ok user_id=%s", user_id)
        return IssuedToken(token=token, expires_in=self._keys.ttl_seconds)

    async def current_user(self, token: str) -> CurrentUser:
        """The user a bearer token belongs to; ``SessionInvalid`` or ``SessionExpired`` if none."""
        async with self._lookup() as sessions:
            row = await sessions.find_session(hash_token(token, self._keys.token_key))
        if row is None:
            raise SessionInvalid()
        if row.expires_at <= utcnow():
            raise SessionExpired()
        return CurrentUser(id=row.user_id, openid=row.openid, session_expires_at=row.expires_at)


def _login_error(exc: WeChatRejected) -> Exception:
    if exc.err_code in _BAD_CODE:
        return InvalidLoginCode()
    if exc.err_code == _RATE_LIMITED:
        return RateLimited()
    if exc.err_code == _RISK_BLOCKED:
        return LoginBlocked()
    return exc

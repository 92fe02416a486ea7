"""Login and session rules.

- A login exchanges a single-use ``wx.login`` code for ``openid``/``session_key`` (code2session),
  upserts the user, replaces their ``session_key`` (sealed at rest) and issues our own opaque token.
- The client only ever holds that token; ``session_key`` never leaves the server (PROTOCOL.md §1.4).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db import utcnow
from app.errors import (
    InvalidLoginCode,
    LoginBlocked,
    NotFound,
    RateLimited,
    SessionExpired,
    SessionInvalid,
)
from app.ratelimits.service import Limit, RateLimiter
from app.security import SecretBox, hash_token, new_token
from app.wechat.errors import WeChatRejected
from app.wechat.miniprogram import MiniProgramClient

if TYPE_CHECKING:
    from app.auth.sessioncache import SessionCache
    from app.uow import Database

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
    session_id: int  # the session the request's token belongs to


@dataclass(frozen=True, slots=True)
class AuthKeys:
    """The server-side keys the auth rules need, derived once at start-up."""

    token_key: bytes
    box: SecretBox
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Logins per client IP and overall: each one costs a code2session call against the
    AppID's daily quota, bad codes included."""

    per_ip: Limit
    overall: Limit


class AuthService:
    def __init__(
        self,
        db: Database,
        keys: AuthKeys,
        wechat: MiniProgramClient,
        limiter: RateLimiter,
        limits: LoginLimits,
        sessions: SessionCache,
    ) -> None:
        self._db = db
        self._keys = keys
        self._wechat = wechat
        self._limiter = limiter
        self._limits = limits
        self._sessions = sessions

    async def login(self, code: str, client_ip: str) -> IssuedToken:
        """Exchange a ``wx.login`` code for our own bearer token.

        Past the per-IP or the overall login limit, ``TooManyRequests`` before WeChat is
        called. WeChat is called before any transaction opens; nothing is stored when it fails.
        """
        await self._limiter.check(f"login:ip:{client_ip}", self._limits.per_ip)
        await self._limiter.check("login:all", self._limits.overall)
        try:
            result = await self._wechat.code2session(code)
        except WeChatRejected as exc:
            raise _login_error(exc) from exc
        sealed = self._keys.box.seal(result.session_key.get_secret_value(), context=result.openid)
        token = new_token()
        expires_at = utcnow() + dt.timedelta(seconds=self._keys.ttl_seconds)
        async with self._db.transaction() as tx:
            user_id = await tx.auth.upsert_user(result.openid, result.unionid, sealed)
            await tx.auth.add_session(user_id, hash_token(token, self._keys.token_key), expires_at)
        logger.info("login ok user_id=%s", user_id)
        return IssuedToken(token=token, expires_in=self._keys.ttl_seconds)

    async def current_user(self, token: str) -> CurrentUser:
        """The user a bearer token belongs to; ``SessionInvalid`` or ``SessionExpired`` if none."""
        token_hash = hash_token(token, self._keys.token_key)
        row = self._sessions.get(token_hash)
        if row is None:
            ticket = self._sessions.ticket()
            async with self._db.statement() as tx:
                row = await tx.auth.find_session(token_hash)
            if row is None:
                raise SessionInvalid()
            self._sessions.put(ticket, token_hash, row)
        if row.expires_at <= utcnow():
            raise SessionExpired()
        return CurrentUser(
            id=row.user_id,
            openid=row.openid,
            session_expires_at=row.expires_at,
            session_id=row.session_id,
        )

    async def logout(self, user: CurrentUser) -> None:
        """Revoke the session the request's token belongs to; its other sessions stay."""
        async with self._db.statement() as tx:
            await tx.auth.delete_session(user.session_id)
        self._sessions.forget_session(user.session_id)  # here at once; elsewhere by notification
        logger.info("logout user_id=%s", user.id)

    async def revoke_sessions(self, openid: str) -> int:
        """Revoke every session of the user ``openid`` (``NotFound`` if unknown); how many."""
        async with self._db.transaction() as tx:
            user_id = await tx.auth.find_user_id(openid)
            if user_id is None:
                raise NotFound("No such user.")
            revoked = await tx.auth.delete_user_sessions(user_id)
        self._sessions.forget_user(user_id)
        logger.info("sessions revoked user_id=%s count=%s", user_id, revoked)
        return revoked


def _login_error(exc: WeChatRejected) -> Exception:
    if exc.err_code in _BAD_CODE:
        return InvalidLoginCode()
    if exc.err_code == _RATE_LIMITED:
        return RateLimited()
    if exc.err_code == _RISK_BLOCKED:
        return LoginBlocked()
    return exc

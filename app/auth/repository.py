"""Every statement on ``users`` and ``auth_sessions``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from app.auth.models import AuthSession, User
from app.db import UTCDateTime, utcnow
from app.sql import Executor

_users = cast(Table, User.__table__)
_sessions = cast(Table, AuthSession.__table__)

# Every authenticated request runs this.
_FIND_SESSION = (
    select(_sessions.c.user_id, _users.c.openid, _sessions.c.expires_at, _sessions.c.id)
    .join(_users, _users.c.id == _sessions.c.user_id)
    .where(_sessions.c.token_hash == bindparam("hash"))
)
_ADD_SESSION = _sessions.insert().values(
    user_id=bindparam("user_id"),
    token_hash=bindparam("hash"),
    expires_at=bindparam("expires_at"),
    created_at=bindparam("now"),
)
_DELETE_SESSION = delete(_sessions).where(_sessions.c.id == bindparam("session_id"))
_FIND_USER_ID = select(_users.c.id).where(_users.c.openid == bindparam("openid"))
_DELETE_USER_SESSIONS = delete(_sessions).where(_sessions.c.user_id == bindparam("user_id"))
_DELETE_EXPIRED = delete(_sessions).where(
    _sessions.c.expires_at < bindparam("now", type_=UTCDateTime())
)


def _upsert_user(dialect: str) -> Any:
    """Insert or update the user by ``openid``: racing logins of one user both succeed."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_users).values(
        openid=bindparam("openid"),
        unionid=bindparam("unionid"),
        session_key_sealed=bindparam("sealed"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[_users.c.openid],
        set_={
            "unionid": stmt.excluded.unionid,
            "session_key_sealed": stmt.excluded.session_key_sealed,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(_users.c.id)


_UPSERT_USER = {dialect: _upsert_user(dialect) for dialect in ("postgresql", "sqlite")}


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: int
    openid: str
    expires_at: dt.datetime
    session_id: int


class AuthRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def upsert_user(self, openid: str, unionid: str | None, session_key_sealed: str) -> int:
        """The user's id, inserted or updated by ``openid``."""
        params = {
            "openid": openid,
            "unionid": unionid,
            "sealed": session_key_sealed,
            "now": utcnow(),
        }
        return int(await self._sql.scalar(_UPSERT_USER[self._sql.dialect], params))

    async def add_session(self, user_id: int, token_hash: str, expires_at: dt.datetime) -> None:
        params = {"user_id": user_id, "hash": token_hash, "expires_at": expires_at, "now": utcnow()}
        await self._sql.execute(_ADD_SESSION, params)

    async def find_session(self, token_hash: str) -> SessionRow | None:
        """The session a token hash belongs to, with its user's openid; None if unknown."""
        row = await self._sql.fetchrow(_FIND_SESSION, {"hash": token_hash})
        return None if row is None else SessionRow(*row)

    async def delete_session(self, session_id: int) -> int:
        return await self._sql.execute(_DELETE_SESSION, {"session_id": session_id})

    async def find_user_id(self, openid: str) -> int | None:
        user_id = await self._sql.scalar(_FIND_USER_ID, {"openid": openid})
        return None if user_id is None else int(user_id)

    async def delete_user_sessions(self, user_id: int) -> int:
        """Every session of the user, expired or not; how many there were."""
        return await self._sql.execute(_DELETE_USER_SESSIONS, {"user_id": user_id})

    async def delete_expired_sessions(self, now: dt.datetime) -> int:
        return await self._sql.execute(_DELETE_EXPIRED, {"now": now})

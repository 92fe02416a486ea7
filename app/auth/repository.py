"""Every query of the auth package."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.models import AuthSession, User
from app.db import utcnow
from app.dbutil import upsert

_users = cast(Table, User.__table__)
_sessions = cast(Table, AuthSession.__table__)


_FIND_SESSION = (
    select(_sessions.c.user_id, _users.c.openid, _sessions.c.expires_at)
    .join(_users, _users.c.id == _sessions.c.user_id)
    .where(_sessions.c.token_hash == bindparam("hash"))
)


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: int
    openid: str
    expires_at: dt.datetime


class SessionLookup(Protocol):
    async def find_session(self, token_hash: str) -> SessionRow | None:
        """The session a token hash belongs to, with its user's openid; None if unknown."""


class AuthRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def upsert_user(self, openid: str, unionid: str | None, session_key_sealed: str) -> int:
        """Insert or update the user by ``openid``; racing logins of one user both succeed."""
        now = utcnow()
        stmt = upsert(self._conn.dialect.name, _users).values(
            openid=openid,
            unionid=unionid,
            session_key_sealed=session_key_sealed,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[_users.c.openid],
            set_={
                "unionid": stmt.excluded.unionid,
                "session_key_sealed": stmt.excluded.session_key_sealed,
                "updated_at": now,
            },
        ).returning(_users.c.id)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def add_session(self, user_id: int, token_hash: str, expires_at: dt.datetime) -> None:
        stmt = _sessions.insert().values(
            user_id=user_id, token_hash=token_hash, expires_at=expires_at, created_at=utcnow()
        )
        await self._conn.execute(stmt)

    async def find_session(self, token_hash: str) -> SessionRow | None:
        """Every authenticated request runs this: the statement is built once."""
        row = (await self._conn.execute(_FIND_SESSION, {"hash": token_hash})).one_or_none()
        return None if row is None else SessionRow(row.user_id, row.openid, row.expires_at)

    async def delete_expired_sessions(self, now: dt.datetime) -> int:
        result = await self._conn.execute(delete(_sessions).where(_sessions.c.expires_at < now))
        return int(result.rowcount or 0)

"""The session lookup on asyncpg directly: every authenticated request on PostgreSQL runs it.

Mirrors ``_FIND_SESSION`` in ``app/auth/repository.py``; the whole test suite runs against both.
"""

from __future__ import annotations

from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from app.auth.repository import SessionRow

_FIND_SESSION = (
    "SELECT s.user_id, u.openid, s.expires_at FROM auth_sessions s"
    " JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1"
)


class AsyncpgAuthRepository:
    def __init__(self, conn: PoolConnectionProxy[Record]) -> None:
        self._conn = conn

    async def find_session(self, token_hash: str) -> SessionRow | None:
        row = await self._conn.fetchrow(_FIND_SESSION, token_hash)
        return None if row is None else SessionRow(*row)

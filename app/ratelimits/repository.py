"""Every statement on ``rate_limits``."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete
from sqlalchemy.dialects import postgresql, sqlite

from app.ratelimits.models import RateCounter
from app.sql import Executor

_counters = cast(Table, RateCounter.__table__)


def _hit(dialect: str) -> Any:
    """Count one hit in the key's window, in one atomic statement: a new window starts at 1,
    the current one goes up by one. Racing replicas serialise on the key's row."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_counters).values(
        key=bindparam("key"), window_start=bindparam("window_start"), hits=1
    )
    same_window = _counters.c.window_start == stmt.excluded.window_start
    return stmt.on_conflict_do_update(
        index_elements=[_counters.c.key],
        set_={
            "hits": case((same_window, _counters.c.hits + 1), else_=1),
            "window_start": stmt.excluded.window_start,
        },
    ).returning(_counters.c.hits)


_HIT = {dialect: _hit(dialect) for dialect in ("postgresql", "sqlite")}
_PRUNE = delete(_counters).where(_counters.c.window_start < bindparam("before"))


class RateLimitRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def hit(self, key: str, window_start: int) -> int:
        """How many hits ``key`` has in the window starting at ``window_start``, this one
        included."""
        params = {"key": key, "window_start": window_start}
        return int(await self._sql.scalar(_HIT[self._sql.dialect], params))

    async def prune(self, before: int) -> int:
        """Forget the counters of windows that began before ``before`` (Unix seconds)."""
        return await self._sql.execute(_PRUNE, {"before": before})

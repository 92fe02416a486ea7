"""Fixed-window rate limits shared by every replica through the database.

One atomic upsert per check (``RateLimitRepository.hit``), so no second service (Redis) is
needed and replicas cannot both take the last slot. A fixed window lets up to twice the limit
through around a window's edge; for keeping WeChat's quota and our tables safe, that is enough.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import TooManyRequests

if TYPE_CHECKING:
    from app.uow import Database


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``hits`` per ``seconds`` for one key."""

    hits: int
    seconds: int = 60


class RateLimiter:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def check(self, key: str, limit: Limit) -> None:
        """Count a hit on ``key``; ``TooManyRequests`` (429, ``Retry-After``) past the limit."""
        retry_after = await self._hit(key, limit)
        if retry_after is not None:
            raise TooManyRequests(retry_after)

    async def allows(self, key: str, limit: Limit) -> bool:
        """Count a hit on ``key``; whether it is within the limit."""
        return await self._hit(key, limit) is None

    async def _hit(self, key: str, limit: Limit) -> int | None:
        now = self._clock()
        window_start = int(now // limit.seconds) * limit.seconds
        async with self._db.statement() as tx:
            hits = await tx.limits.hit(key, window_start)
        if hits <= limit.hits:
            return None
        return max(1, math.ceil(window_start + limit.seconds - now))

    async def prune(self, older_than_seconds: int) -> int:
        """Forget windows that began more than ``older_than_seconds`` ago."""
        async with self._db.statement() as tx:
            return await tx.limits.prune(int(self._clock()) - older_than_seconds)

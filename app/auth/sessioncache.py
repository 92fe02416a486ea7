"""Sessions recently seen, so that a request's bearer check need not ask the database.

Every client request looks its token up; on PostgreSQL that round trip was most of the CPU of
``GET /api/v1/auth/session`` and one of the round trips of every order. So the sessions this
process has seen are kept for ``WXPAY_SESSION_CACHE_SECONDS``, and a revocation anywhere must
still take effect everywhere at once. How:

- PostgreSQL tells us. A trigger on ``auth_sessions`` (migration 0010) sends a notification on
  ``SESSIONS_CHANNEL`` when a live session is deleted or changed, however it happened: a
  logout on another replica, the admin's revoke, an operator's ``DELETE`` in psql. Each process
  listens on a connection of its own and forgets the session when the notification comes.
- The cache is live only while that connection is. Until it has subscribed, after it drops, and
  while it does not answer its heartbeat, every lookup goes to the database, as without a cache.
- A lookup that started before a revocation arrived is not cached (a generation count), so a
  row read just before a logout cannot outlive it here.
- The process's own logouts and revokes forget their sessions before answering, without
  waiting for the notification.
- Expiry is checked on every request from the cached ``expires_at``, as from the row.

What is left is the notification's delivery time (about a millisecond) on other replicas: a
request that arrives there in that window is served, as one that had read the row a moment
before the revocation would have been. SQLite (the embedded database) has no notifications,
so there the cache is never live.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app import metrics
from app.auth.repository import SessionRow

if TYPE_CHECKING:
    from app.uow import Database, Subscription

logger = logging.getLogger(__name__)

SESSIONS_CHANNEL = "wxpay_auth_sessions"
# The trigger's payload for "forget everything" (a TRUNCATE); any other payload is a session id.
FORGET_ALL = "*"
# Our own barrier messages (``SessionFreshness.caught_up``) start with this; never a session id.
_MARKER = "sync:"

# Bounded, so a flood of distinct valid tokens cannot grow the process: ~400 bytes an entry.
MAX_ENTRIES = 20_000
HEARTBEAT_SECONDS = 5.0
RECONNECT_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


class SessionCache:
    """Token hash -> session row, for at most ``ttl_seconds``, and only while ``live``."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._max, self._clock = ttl_seconds, max_entries, clock
        self._entries: dict[str, tuple[float, SessionRow]] = {}
        self._hash_of: dict[int, str] = {}  # session id -> token hash, to forget by id
        self._generation = 0
        self.live = False

    def get(self, token_hash: str) -> SessionRow | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            metrics.child(metrics.SESSION_LOOKUPS, "miss" if self.live else "off").inc()
            return None
        if entry[0] <= self._clock():
            self._drop(token_hash)
            metrics.child(metrics.SESSION_LOOKUPS, "miss").inc()
            return None
        metrics.child(metrics.SESSION_LOOKUPS, "hit").inc()
        return entry[1]

    def ticket(self) -> int:
        """Taken before a lookup in the database; ``put`` keeps the row only if nothing was
        forgotten in between (the lookup may have read a row that is gone now)."""
        return self._generation

    def put(self, ticket: int, token_hash: str, row: SessionRow) -> None:
        if not self.live or ticket != self._generation:
            return
        if len(self._entries) >= self._max:
            self._drop(next(iter(self._entries)))  # the oldest entry
        self._entries[token_hash] = (self._clock() + self._ttl, row)
        self._hash_of[row.session_id] = token_hash

    def forget_session(self, session_id: int) -> None:
        self._generation += 1
        token_hash = self._hash_of.get(session_id)
        if token_hash is not None:
            self._drop(token_hash)

    def forget_user(self, user_id: int) -> None:
        self._generation += 1
        for token_hash in [h for h, (_, row) in self._entries.items() if row.user_id == user_id]:
            self._drop(token_hash)

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._hash_of.clear()

    def open(self) -> None:
        """Notifications flow: entries may be kept."""
        self.forget_all()
        self.live = True

    def close(self) -> None:
        """Notifications may be missed: keep nothing until they flow again."""
        self.live = False
        self.forget_all()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, token_hash: str) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            self._hash_of.pop(entry[1].session_id, None)


class SessionFreshness:
    """Keeps ``cache`` live exactly while the process hears ``SESSIONS_CHANNEL``."""

    def __init__(self, db: Database, cache: SessionCache) -> None:
        self._db, self.cache = db, cache
        self._subscription: Subscription | None = None
        self._markers = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._lost = asyncio.Event()

    async def run_forever(self) -> None:
        """Subscribe, heartbeat, and on any failure forget everything and subscribe again."""
        failures = 0
        while True:
            try:
                subscription = await self._db.subscribe(
                    SESSIONS_CHANNEL, self._on_message, on_lost=self._on_lost
                )
            except Exception as exc:  # unreachable database: the cache stays off meanwhile
                logger.warning("session cache off: cannot subscribe (%s)", type(exc).__name__)
            else:
                if subscription is None:
                    return  # this database has no notifications: never live
                failures = 0
                await self._listen(subscription)
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
            failures += 1

    async def _listen(self, subscription: Subscription) -> None:
        self._subscription = subscription
        self._lost.clear()
        self.cache.open()
        logger.info("session cache live")
        try:
            while True:
                # Wakes at once when the connection drops, else pings it every few seconds:
                # a connection can also die silently (a half-open TCP socket, a frozen host).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        await self._lost.wait()
                if self._lost.is_set():
                    raise ConnectionError("the listening connection closed")
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await subscription.ping()
        except Exception as exc:
            logger.warning("session cache off: notifications lost (%s)", type(exc).__name__)
        finally:
            self.cache.close()
            self._subscription = None
            await subscription.close()

    async def caught_up(self) -> None:
        """Return once every change committed before the call has reached the cache: our own
        marker goes through the channel, and PostgreSQL delivers notifications in commit order.
        A no-op while the cache is off (nothing is kept then)."""
        if self._subscription is None:
            return
        marker = f"{_MARKER}{next(self._markers)}"
        arrived = self._waiting[marker] = asyncio.get_running_loop().create_future()
        try:
            await self._subscription.notify(marker)
            async with asyncio.timeout(HEARTBEAT_SECONDS):
                await arrived
        finally:
            self._waiting.pop(marker, None)

    def _on_message(self, payload: str) -> None:
        if payload.startswith(_MARKER):
            waiter = self._waiting.get(payload)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif payload.isdigit():
            self.cache.forget_session(int(payload))
        else:  # FORGET_ALL, or anything we do not know: the safe reading
            self.cache.forget_all()

    def _on_lost(self) -> None:
        self.cache.close()  # at once, before anything else runs
        self._lost.set()

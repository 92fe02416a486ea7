"""Bounded retries with capped exponential backoff and full jitter, for WeChatUnavailable only.

Callers decide what is safe to retry (PROTOCOL.md §2.2, §6.3): re-sending the same
``out_trade_no`` with identical fields, queries, closes, and refunds under the same
``out_refund_no``. A ``WeChatRejected`` is final and passes straight through.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.wechat.errors import WeChatUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` calls in all; before attempt ``k + 1`` sleep a random time in
    ``[0, min(max_delay, base_delay * 2**(k - 1))]`` (full jitter, so retries spread out).

    ``sleep`` and ``rng`` are seams for tests; production uses the defaults.
    """

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Jitter only spreads load; it protects no secret, so the default PRNG is right here.
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("backoff delays cannot be negative")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 2))
        return self.rng.uniform(0, cap)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str) -> T:
    """Await ``call()`` until it succeeds, raises anything but ``WeChatUnavailable``, or
    ``policy.max_attempts`` is spent (the last ``WeChatUnavailable`` is then re-raised)."""
    attempt = 1
    while True:
        try:
            return await call()
        except WeChatUnavailable as exc:
            if attempt >= policy.max_attempts:
                raise
            attempt += 1
            delay = policy.delay_before(attempt)
            logger.warning(
                "%s failed (%s); retry %d/%d in %.2fs",
                what,
                exc.message,
                attempt - 1,
                policy.max_attempts - 1,
                delay,
            )
            await policy.sleep(delay)

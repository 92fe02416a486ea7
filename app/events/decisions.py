"""What comes of one delivery attempt: a pure function of the attempt, tested as a table.

- A 2xx means delivered. Anything else (another status, no answer, a timeout) is retried.
- Retries back off exponentially, doubling from ``base`` up to ``cap``, with jitter so the
  replicas' retries of one outage do not arrive together: each delay is drawn from the upper
  half of its step (never less than half, so the schedule still spans what the settings say).
- There is no last attempt: a failing endpoint is disabled after a configurable time instead
  (``WXPAY_WEBHOOK_DISABLE_AFTER_SECONDS``, 3 days by default), keeping what it is owed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.config import Settings


@dataclass(frozen=True, slots=True)
class WebhookBackoff:
    base_seconds: float
    cap_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookBackoff:
        return cls(settings.webhook_retry_base_seconds, settings.webhook_retry_max_seconds)

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds before the next try after ``attempts`` failed ones; ``jitter`` in [0, 1)."""
        step = min(self.cap_seconds, self.base_seconds * float(2 ** min(attempts - 1, 62)))
        return step * (0.5 + jitter / 2)


def is_delivered(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def next_attempt_at(
    status: int | None, attempts: int, now: dt.datetime, policy: WebhookBackoff, jitter: float
) -> dt.datetime | None:
    """When to try again after an attempt that got ``status`` (None: no answer), the
    ``attempts``-th; None when it was delivered."""
    if is_delivered(status):
        return None
    return now + dt.timedelta(seconds=policy.delay(attempts, jitter))

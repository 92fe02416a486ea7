"""The simulator's own clock: real time plus an offset that tests can move forward.

Codes expire after 5 minutes and prepay ids after 2 hours; a test proves both by advancing this
clock rather than by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.wechat.timefmt import from_wechat_time


class SimClock:
    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        self._offset += timedelta(seconds=seconds)
        return self.now()

    def reset(self) -> None:
        self._offset = timedelta()


def parse_beijing_stamp(text: str) -> datetime | None:
    """A ``yyyyMMddHHmmss`` Beijing time as an aware datetime, or ``None`` if malformed."""
    try:
        return from_wechat_time(text)
    except ValueError:
        return None

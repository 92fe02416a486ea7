"""The simulator's own clock: real time plus an offset that tests can move forward.

Codes expire after 5 minutes and prepay ids after 2 hours; a test proves both by advancing this
clock rather than by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


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


def beijing_stamp(moment: datetime) -> str:
    """WeChat Pay's time format: Beijing time, ``yyyyMMddHHmmss``."""
    return moment.astimezone(BEIJING).strftime("%Y%m%d%H%M%S")


def refund_time(moment: datetime) -> str:
    """The refund notify's and query's ``yyyy-MM-dd HH:mm:ss`` Beijing time."""
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def parse_beijing_stamp(text: str) -> datetime | None:
    """A ``yyyyMMddHHmmss`` Beijing time as an aware datetime, or ``None`` if malformed."""
    if len(text) != 14 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None

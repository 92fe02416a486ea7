"""WeChat Pay times, all in Beijing time (UTC+8): v2's ``yyyyMMddHHmmss`` (PROTOCOL.md §2)
and v3's RFC 3339 (§8)."""

from __future__ import annotations

import datetime as dt
from datetime import datetime as datetime_type

BEIJING = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
_FORMAT = "%Y%m%d%H%M%S"


def to_wechat_time(moment: dt.datetime) -> str:
    """An aware datetime as WeChat's ``yyyyMMddHHmmss`` Beijing time."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(BEIJING).strftime(_FORMAT)


def to_rfc3339(moment: dt.datetime) -> str:
    """v3 times: RFC 3339 in Beijing time, e.g. ``2018-06-08T10:34:56+08:00``."""
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")


def to_refund_time(moment: datetime_type) -> str:
    """The refund notify's and refund query's ``yyyy-MM-dd HH:mm:ss`` Beijing time (§6.4, §6.5)."""
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def from_wechat_time(text: str) -> dt.datetime:
    """WeChat's ``yyyyMMddHHmmss`` Beijing time as an aware UTC datetime."""
    if len(text) != 14 or not (text.isascii() and text.isdigit()):
        raise ValueError(f"not a yyyyMMddHHmmss time: {text!r}")
    # By slices, not strptime (about ten times slower, on every notify); datetime still
    # refuses a month 13 or a February 30.
    parts = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    year, month, day, hour, minute, second = map(int, parts)
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=BEIJING)
    return moment.astimezone(dt.UTC)


def from_refund_time(text: str) -> dt.datetime:
    """The refund messages' ``yyyy-MM-dd HH:mm:ss`` Beijing time as an aware UTC datetime."""
    moment = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    return moment.replace(tzinfo=BEIJING).astimezone(dt.UTC)

"""WeChat v2 times: ``yyyyMMddHHmmss``, Beijing time (PROTOCOL.md §2: "Beijing time (UTC+8)")."""

from __future__ import annotations

import datetime as dt

import pytest

from app.wechat.timefmt import from_wechat_time, to_wechat_time


def test_a_notify_time_end_is_beijing_time() -> None:
    # time_end of the signed notify in PROTOCOL.md's examples: 14:15:30 in Beijing.
    assert from_wechat_time("20231115141530") == dt.datetime(2023, 11, 15, 6, 15, 30, tzinfo=dt.UTC)


def test_beijing_midnight_is_the_previous_day_in_utc() -> None:
    assert from_wechat_time("20240101000000") == dt.datetime(2023, 12, 31, 16, 0, tzinfo=dt.UTC)


def test_round_trip() -> None:
    moment = dt.datetime(2026, 2, 28, 23, 59, 59, tzinfo=dt.UTC)
    assert from_wechat_time(to_wechat_time(moment)) == moment


@pytest.mark.parametrize(
    "text",
    [
        "2023111514153",  # 13 digits
        "202311151415300",  # 15 digits
        "2023-11-15 14:1",  # 14 characters, not digits
        "20231115 41530",
        "２０２３１１１５１４１５３０",  # full-width digits: str.isdigit() says yes
        "20231315141530",  # month 13
        "20230230141530",  # February 30
        "20231115241530",  # hour 24
        "20231115146030",  # minute 60
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        from_wechat_time(text)

"""Our ``out_trade_no``: WeChat's rules (PROTOCOL.md §2.1: at most 32 of ``[0-9A-Za-z_-|*]``,
unique per merchant; v3 wants at least 6), sortable by time, and unguessable after the time."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from app.orders.numbers import OUT_TRADE_NO, new_out_trade_no

MOMENT = dt.datetime(2026, 11, 30, 4, 5, 6, tzinfo=dt.UTC)


def test_the_time_to_the_second_then_twelve_random_characters() -> None:
    number = new_out_trade_no(MOMENT)

    assert len(number) == 26 and OUT_TRADE_NO.match(number)
    assert number.startswith("20261130040506")
    assert set(number[14:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def test_beijing_time_given_is_written_in_utc() -> None:
    beijing = MOMENT.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert new_out_trade_no(beijing).startswith("20261130040506")


def test_the_random_part_uses_every_character_in_every_position() -> None:
    numbers = [new_out_trade_no(MOMENT) for _ in range(5_000)]

    assert len(set(numbers)) == len(numbers)
    for position in range(14, 26):
        seen = Counter(n[position] for n in numbers)
        # 36 characters, ~139 draws each: all present, none wildly over- or under-drawn.
        assert len(seen) == 36
        assert max(seen.values()) < 3 * min(seen.values())

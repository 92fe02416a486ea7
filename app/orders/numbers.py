"""Merchant order numbers (``out_trade_no``).

WeChat allows at most 32 characters of ``[0-9A-Za-z_-|*]`` and requires uniqueness per
merchant (PROTOCOL.md §2.1; v3 also wants at least 6). Ours: a UTC timestamp to the second, so
numbers sort by time in any listing, then 12 random characters, so two servers never collide.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string

_ALPHABET = string.ascii_uppercase + string.digits
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_-]{6,32}$")
_SUFFIX_LENGTH = 12
_SUFFIX_SPACE = len(_ALPHABET) ** _SUFFIX_LENGTH


def new_out_trade_no(now: dt.datetime | None = None) -> str:
    """26 characters: ``yyyyMMddHHmmss`` (UTC) followed by 12 random ``[A-Z0-9]``."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    # One uniform draw below 36**12, written in base 36: one read of the OS's randomness
    # instead of twelve secrets.choice calls (a measurable share of a create order's CPU).
    draw = secrets.randbelow(_SUFFIX_SPACE)
    suffix = []
    for _ in range(_SUFFIX_LENGTH):
        draw, digit = divmod(draw, len(_ALPHABET))
        suffix.append(_ALPHABET[digit])
    return moment.strftime("%Y%m%d%H%M%S") + "".join(suffix)

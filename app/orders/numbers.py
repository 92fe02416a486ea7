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


def new_out_trade_no(now: dt.datetime | None = None) -> str:
    """26 characters: ``yyyyMMddHHmmss`` (UTC) followed by 12 random ``[A-Z0-9]``."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return moment.strftime("%Y%m%d%H%M%S") + suffix

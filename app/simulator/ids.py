"""Identifiers shaped like WeChat's own, so clients that check lengths and formats accept them."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
from datetime import datetime

from app.wechat.timefmt import BEIJING
from app.wechat.timefmt import to_wechat_time as beijing_stamp

_ALNUM = string.ascii_letters + string.digits
_OPENID_TAIL = _ALNUM + "-_"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _digits(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


def new_login_code() -> str:
    """A ``wx.login`` code: 32 letters and digits."""
    return _random(_ALNUM, 32)


def new_openid(appid: str) -> str:
    """28 characters like ``oUpF8uMuAJO_M2pxb1Q9zNjWeS6o``.

    Real openids share a 6-character prefix per mini-program; this one derives it from the appid.
    """
    digest = base64.urlsafe_b64encode(hashlib.sha256(appid.encode()).digest()).decode()
    return "o" + digest[:5] + _random(_OPENID_TAIL, 22)


def new_session_key() -> str:
    """24-character base64 of 16 random bytes (an AES-128 key)."""
    return base64.b64encode(secrets.token_bytes(16)).decode()


def new_prepay_id(moment: datetime) -> str:
    """``wx`` + Beijing ``yyyyMMddHHmmss`` + 20 hex digits: 36 characters."""
    return "wx" + beijing_stamp(moment) + secrets.token_hex(10)


def new_transaction_id(moment: datetime) -> str:
    """28 digits like ``4200001234202311151234567890``: prefix, serial, date, random."""
    return "42000" + _digits(5) + moment.astimezone(BEIJING).strftime("%Y%m%d") + _digits(10)


def new_refund_id(moment: datetime) -> str:
    """29 digits like ``50300000012023111512345678901``."""
    return "5030" + _digits(6) + moment.astimezone(BEIJING).strftime("%Y%m%d") + _digits(11)


def new_request_id() -> str:
    """The ``rid`` WeChat appends to mini-program error messages."""
    return f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(6)}"

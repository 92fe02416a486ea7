"""Field presence, lengths and formats of the v2 Pay requests (PROTOCOL.md §2.1, §6).

A missing required field is ``LACK_PARAMS`` (signed, ``result_code=FAIL``); a present field
that is too long or malformed is refused at the protocol layer (``return_code=FAIL``), as
WeChat does with ``参数格式校验错误``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.simulator.clock import parse_beijing_stamp
from app.simulator.envelope import BusinessFail, ProtocolFail


@dataclass(frozen=True, slots=True)
class Rule:
    max_length: int
    check: Callable[[str], bool] | None = None


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda value: compiled.fullmatch(value) is not None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_notify_url(value: str) -> bool:
    # Absolute http(s) URL, and WeChat forbids a query string on notify URLs.
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


def _is_stamp(value: str) -> bool:
    return parse_beijing_stamp(value) is not None


AMOUNT = Rule(10, _pattern(r"[1-9][0-9]*"))
OUT_TRADE_NO_RULE = Rule(32, _pattern(r"[0-9A-Za-z_\-|*@]+"))
OUT_REFUND_NO_RULE = Rule(64, _pattern(r"[0-9A-Za-z_\-|*@]+"))
NOTIFY_URL = Rule(256, _is_notify_url)
COMMON_RULES: dict[str, Rule] = {
    "appid": Rule(32),
    "mch_id": Rule(32),
    "nonce_str": Rule(32),
    "sign": Rule(64),
    "device_info": Rule(32),
    "transaction_id": Rule(32, _pattern(r"[0-9A-Za-z]+")),
    "out_trade_no": OUT_TRADE_NO_RULE,
}
UNIFIED_ORDER_RULES: dict[str, Rule] = {
    "body": Rule(127),
    "detail": Rule(6000),
    "attach": Rule(127),
    "fee_type": Rule(16),
    "total_fee": AMOUNT,
    "spbill_create_ip": Rule(64, _is_ip),
    "time_start": Rule(14, _is_stamp),
    "time_expire": Rule(14, _is_stamp),
    "goods_tag": Rule(32),
    "notify_url": NOTIFY_URL,
    "trade_type": Rule(16),
    "product_id": Rule(32),
    "limit_pay": Rule(32, _pattern(r"no_credit")),
    "openid": Rule(128),
    "receipt": Rule(8, _pattern(r"Y")),
    "scene_info": Rule(256),
}
REFUND_RULES: dict[str, Rule] = {
    "out_refund_no": OUT_REFUND_NO_RULE,
    "total_fee": AMOUNT,
    "refund_fee": AMOUNT,
    "refund_fee_type": Rule(8),
    "refund_desc": Rule(80),
    "refund_account": Rule(
        30, _pattern(r"REFUND_SOURCE_UNSETTLED_FUNDS|REFUND_SOURCE_RECHARGE_FUNDS")
    ),
    "notify_url": NOTIFY_URL,
    "refund_id": Rule(32, _pattern(r"[0-9]+")),
    "offset": Rule(4, _pattern(r"[0-9]+")),
}


def require(fields: Mapping[str, str], names: Iterable[str]) -> None:
    """``LACK_PARAMS`` naming the first required field that is absent or empty."""
    for name in names:
        if not fields.get(name):
            raise BusinessFail("LACK_PARAMS", f"缺少参数{name}")


def require_one_of(fields: Mapping[str, str], names: Iterable[str]) -> None:
    names = list(names)
    if not any(fields.get(name) for name in names):
        raise BusinessFail("LACK_PARAMS", "缺少参数" + "或".join(names))


def check_formats(fields: Mapping[str, str], rules: Mapping[str, Rule]) -> None:
    """``ProtocolFail`` naming the first field longer than allowed or not in its format."""
    for name, value in fields.items():
        rule = rules.get(name) or COMMON_RULES.get(name)
        if rule is None or value == "":
            continue
        if len(value) > rule.max_length or (rule.check is not None and not rule.check(value)):
            raise ProtocolFail(f"{name}参数格式校验错误")

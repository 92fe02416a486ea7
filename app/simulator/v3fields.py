"""Reading a v3 request's JSON: present, typed, within length and format, or ``400 PARAM_ERROR``
naming the field as WeChat does (``/body/amount/total``), PROTOCOL.md §8.1, §8.7."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app.simulator.v3envelope import V3Error

# §8.1: 6-32 characters; §8.7 out_refund_no up to 64.
V3_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*@]{6,32}")
V3_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")


@dataclass(frozen=True, slots=True)
class V3Call:
    """One authenticated v3 request: its JSON body, query and the id in its path."""

    body: dict[str, Any] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    path_id: str = ""


def param_error(message: str) -> V3Error:
    return V3Error(400, "PARAM_ERROR", message)


def text(
    data: Mapping[str, Any],
    where: str,
    name: str,
    *,
    max_length: int,
    required: bool = True,
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise param_error(f"输入源“{where}/{name}”映射到值字段缺失")
        return None
    if not isinstance(value, str):
        raise param_error(f"输入源“{where}/{name}”映射到值字段类型错误，应为字符串")
    too_long = len(value) > max_length
    if too_long or (pattern is not None and not pattern.fullmatch(value)):
        raise param_error(f"输入源“{where}/{name}”映射到值字段字符串规则校验失败")
    return value


def required_text(data: Mapping[str, Any], where: str, name: str, **rules: Any) -> str:
    value = text(data, where, name, required=True, **rules)
    assert value is not None
    return value


def amount(data: Mapping[str, Any], where: str, name: str) -> int:
    """A positive integer count of fen (``bool`` is not one, though Python thinks so)."""
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise param_error(f"输入源“{where}/{name}”映射到值字段应为正整数")
    return value


def sub_object(data: Mapping[str, Any], where: str, name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise param_error(f"输入源“{where}/{name}”映射到值字段缺失或类型错误")
    return value


def currency(data: Mapping[str, Any], where: str) -> None:
    if data.get("currency", "CNY") != "CNY":
        raise param_error(f"输入源“{where}/currency”仅支持CNY")


def notify_url_field(data: Mapping[str, Any], where: str, *, required: bool) -> str | None:
    """An absolute http(s) URL without a query string. WeChat wants HTTPS; the simulator takes
    plain HTTP too, as local receivers have no certificate."""
    value = text(data, where, "notify_url", max_length=255, required=required)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise param_error(f"输入源“{where}/notify_url”映射到值字段格式错误，不能携带参数")
    return value


def rfc3339_time(data: Mapping[str, Any], where: str, name: str) -> datetime | None:
    value = text(data, where, name, max_length=64, required=False)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise param_error(f"输入源“{where}/{name}”映射到值字段应为RFC3339格式时间")
    return moment

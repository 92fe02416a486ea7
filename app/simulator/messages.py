"""WeChat's messages as standalone values, for tests, benchmarks and other backends.

``payment_notify_body`` is the v2 payment notify WeChat posts (PROTOCOL.md §5), signed with
the merchant's key, and ``refund_notify_body`` the refund notify (§6.5), its result encrypted
with that key, for code that needs one without running a payment through the simulator.
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.wechat.crypto import encrypt_req_info
from app.wechat.signing import SignType, new_nonce, sign
from app.wechat.xmlcodec import to_xml

EXAMPLE_OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def paid_notify_fields(
    *,
    appid: str,
    mch_id: str,
    openid: str,
    total_fee: int,
    transaction_id: str,
    out_trade_no: str,
    time_end: str,
    **extra: object,
) -> dict[str, object]:
    """The fields of a paid notify (§5), before signing; ``extra`` adds or replaces fields."""
    return {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "appid": appid,
        "mch_id": mch_id,
        "nonce_str": new_nonce(),
        "openid": openid,
        "is_subscribe": "N",
        "trade_type": "JSAPI",
        "bank_type": "OTHERS",
        "fee_type": "CNY",
        "total_fee": total_fee,
        "cash_fee": total_fee,
        "transaction_id": transaction_id,
        "out_trade_no": out_trade_no,
        "time_end": time_end,
        **extra,
    }


def signed(fields: dict[str, object], api_key: str, sign_type: SignType) -> dict[str, object]:
    """``fields`` with ``sign`` (and ``sign_type`` where it is not the default MD5), §3."""
    if sign_type is SignType.HMAC_SHA256:
        fields = {**fields, "sign_type": sign_type.value}
    return {**fields, "sign": sign(fields, api_key, sign_type)}


def refund_result_fields(
    *,
    transaction_id: str,
    out_trade_no: str,
    refund_id: str,
    out_refund_no: str,
    total_fee: int,
    refund_fee: int,
    refund_status: str,
    success_time: str,
    refund_account: str,
    **extra: object,
) -> dict[str, object]:
    """The refund result a refund notify carries encrypted (§6.5)."""
    return {
        "transaction_id": transaction_id,
        "out_trade_no": out_trade_no,
        "refund_id": refund_id,
        "out_refund_no": out_refund_no,
        "total_fee": total_fee,
        "settlement_total_fee": total_fee,
        "refund_fee": refund_fee,
        "settlement_refund_fee": refund_fee,
        "refund_status": refund_status,
        "success_time": success_time,
        "refund_recv_accout": "支付用户零钱",
        "refund_account": refund_account,
        "refund_request_source": "API",
        **extra,
    }


def refund_notify_fields(
    result: dict[str, object], *, api_key: str, **envelope: object
) -> dict[str, object]:
    """The refund notify (§6.5): no ``sign``; the result travels encrypted in ``req_info``.
    ``envelope`` gives ``appid`` and ``mch_id``, and may replace any other field."""
    return {
        "return_code": "SUCCESS",
        "nonce_str": new_nonce(),
        "req_info": encrypt_req_info(to_xml(result, root="root"), api_key),
        **envelope,
    }


def payment_notify_body(
    settings: Settings,
    *,
    out_trade_no: str,
    transaction_id: str,
    total_fee: int,
    sign_type: SignType = SignType.MD5,
    **overrides: Any,
) -> bytes:
    """A paid notify for ``settings``' merchant; ``overrides`` replace or add fields before
    signing (``appid`` of another merchant, ``result_code=FAIL``, ...)."""
    named: dict[str, Any] = {
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "openid": EXAMPLE_OPENID,
        "total_fee": total_fee,
        "transaction_id": transaction_id,
        "out_trade_no": out_trade_no,
        "time_end": "20261127101500",
    }
    fields = paid_notify_fields(**{**named, **overrides})
    return to_xml(signed(fields, settings.api_key.get_secret_value(), sign_type))


def refund_notify_body(
    settings: Settings,
    *,
    out_trade_no: str,
    out_refund_no: str,
    total_fee: int,
    refund_fee: int,
    refund_status: str = "SUCCESS",
    api_key: str | None = None,
    outer: dict[str, Any] | None = None,
    **overrides: Any,
) -> bytes:
    """A refund notify for ``settings``' merchant; ``overrides`` replace or add fields of the
    encrypted result, ``outer`` those of the envelope, ``api_key`` encrypts with another key."""
    named: dict[str, Any] = {
        "transaction_id": "4200000000" + out_trade_no[-18:].rjust(18, "0"),
        "out_trade_no": out_trade_no,
        "refund_id": "50000" + out_refund_no[-24:],
        "out_refund_no": out_refund_no,
        "total_fee": total_fee,
        "refund_fee": refund_fee,
        "refund_status": refund_status,
        "success_time": "2026-11-27 10:20:00",
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
    }
    result = refund_result_fields(**{**named, **overrides})
    key = api_key or settings.api_key.get_secret_value()
    envelope = {"appid": settings.appid, "mch_id": settings.mch_id, **(outer or {})}
    return to_xml(refund_notify_fields(result, api_key=key, **envelope))

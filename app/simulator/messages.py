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
    fields: dict[str, Any] = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "nonce_str": new_nonce(),
        "openid": EXAMPLE_OPENID,
        "is_subscribe": "N",
        "trade_type": "JSAPI",
        "bank_type": "OTHERS",
        "fee_type": "CNY",
        "total_fee": total_fee,
        "cash_fee": total_fee,
        "transaction_id": transaction_id,
        "out_trade_no": out_trade_no,
        "time_end": "20261127101500",
        **overrides,
    }
    if sign_type is SignType.HMAC_SHA256:
        fields["sign_type"] = sign_type.value
    fields["sign"] = sign(fields, settings.api_key.get_secret_value(), sign_type)
    return to_xml(fields)


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
    details: dict[str, Any] = {
        "transaction_id": "4200000000" + out_trade_no[-18:].rjust(18, "0"),
        "out_trade_no": out_trade_no,
        "refund_id": "50000" + out_refund_no[-24:],
        "out_refund_no": out_refund_no,
        "total_fee": total_fee,
        "settlement_total_fee": total_fee,
        "refund_fee": refund_fee,
        "settlement_refund_fee": refund_fee,
        "refund_status": refund_status,
        "success_time": "2026-11-27 10:20:00",
        "refund_recv_accout": "支付用户零钱",
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
        "refund_request_source": "API",
        **overrides,
    }
    key = api_key or settings.api_key.get_secret_value()
    fields: dict[str, Any] = {
        "return_code": "SUCCESS",
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "nonce_str": new_nonce(),
        "req_info": encrypt_req_info(to_xml(details, root="root"), key),
        **(outer or {}),
    }
    return to_xml(fields)

"""WeChat's messages as standalone values, for tests, benchmarks and other backends.

``payment_notify_body`` is the v2 payment notify WeChat posts (PROTOCOL.md §5), signed with
the merchant's key, for code that needs one without running a payment through the simulator.
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
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

"""Protocol hot paths, ours against wechatpy 1.8.18, timed side by side in one process.

Two operations, per call:

- sign + build: MD5-sign an 11-field unified order and serialise it to the XML body sent.
- parse + verify: parse a 20-field payment notify (coupon fields included) and check its sign.

Rounds interleave the two implementations so machine noise hits both alike; the ratio reported
is the median of the per-round ratios. Run: ``.venv/bin/python bench/protocol.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from wechatpy.pay import WeChatPay  # type: ignore[import-untyped]
from wechatpy.pay.utils import calculate_signature, dict_to_xml  # type: ignore[import-untyped]

from app.wechat.signing import sign, verify
from app.wechat.xmlcodec import from_xml, to_signed_xml, to_xml

API_KEY = "0123456789abcdefghijklmnopqrstuv"  # PROTOCOL.md §10 L1, test only

# PROTOCOL.md §10 L1 plus time_expire: the shape of a real JSAPI unified order.
ORDER: dict[str, object] = {
    "appid": "wx1234567890abcdef",
    "mch_id": "1900000109",
    "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "body": "示例商城-会员充值",
    "out_trade_no": "ORD20231115000001",
    "total_fee": 1,
    "spbill_create_ip": "203.0.113.7",
    "notify_url": "https://example.com/wxpay/notify",
    "trade_type": "JSAPI",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "time_expire": "20231115143000",
}

# PROTOCOL.md §10 L3 with one coupon added: 19 signed fields plus sign.
_NOTIFY_FIELDS: dict[str, object] = {
    "appid": "wx1234567890abcdef",
    "bank_type": "OTHERS",
    "cash_fee": 90,
    "coupon_count": 1,
    "coupon_fee": 10,
    "coupon_fee_0": 10,
    "coupon_id_0": "10000000001",
    "fee_type": "CNY",
    "is_subscribe": "N",
    "mch_id": "1900000109",
    "nonce_str": "dfPpVk0XtV5ZmBqnTtxLcE9CsQ3gHKyo",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "out_trade_no": "ORD20231115000001",
    "result_code": "SUCCESS",
    "return_code": "SUCCESS",
    "time_end": "20231115141530",
    "total_fee": 100,
    "trade_type": "JSAPI",
    "transaction_id": "4200001234202311151234567890",
}
NOTIFY_XML = to_xml({**_NOTIFY_FIELDS, "sign": sign(_NOTIFY_FIELDS, API_KEY)})

_wechatpy = WeChatPay(appid="wx1234567890abcdef", api_key=API_KEY, mch_id="1900000109")


def wechatpy_sign_build() -> bytes:
    # What WeChatPay._request does with a dict payload.
    body: str = dict_to_xml(ORDER, calculate_signature(ORDER, API_KEY))
    return body.encode("utf-8")


def ours_sign_build() -> bytes:
    return to_signed_xml(ORDER, API_KEY)


def wechatpy_parse_verify() -> dict[str, object]:
    result: dict[str, object] = _wechatpy.parse_payment_result(NOTIFY_XML)
    return result


def ours_parse_verify() -> dict[str, str]:
    fields = from_xml(NOTIFY_XML)
    if not verify(fields, API_KEY):
        raise AssertionError("notify did not verify")
    return fields


OPERATIONS: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
    "sign + build (11-field unified order)": (wechatpy_sign_build, ours_sign_build),
    "parse + verify (20-field notify)": (wechatpy_parse_verify, ours_parse_verify),
}


def check_agreement() -> None:
    """Both sides must produce the same signature and accept the same notify."""
    ours = from_xml(ours_sign_build())
    theirs = from_xml(wechatpy_sign_build())
    assert ours == {k: str(v) for k, v in theirs.items()}, "the two bodies differ"
    assert len(from_xml(NOTIFY_XML)) == 20
    assert wechatpy_parse_verify()["sign"] == ours_parse_verify()["sign"]


def time_per_call(operation: Callable[[], object], number: int) -> float:
    """Microseconds per call over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        operation()
    return (time.perf_counter() - start) / number * 1e6


def measure(rounds: int, number: int) -> None:
    print(f"{'operation':40} {'wechatpy µs':>12} {'ours µs':>9} {'ratio':>7}")
    for name, (theirs, ours) in OPERATIONS.items():
        time_per_call(theirs, number)  # warm-up
        time_per_call(ours, number)
        samples = [
            (time_per_call(theirs, number), time_per_call(ours, number)) for _ in range(rounds)
        ]
        their_median = statistics.median(t for t, _ in samples)
        our_median = statistics.median(o for _, o in samples)
        ratio = statistics.median(o / t for t, o in samples)
        print(f"{name:40} {their_median:12.1f} {our_median:9.1f} {ratio:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (median)")
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    args = parser.parse_args()
    check_agreement()
    measure(args.rounds, args.number)


if __name__ == "__main__":
    main()

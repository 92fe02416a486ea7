"""v2 signing and wx.requestPayment parameters against PROTOCOL.md §3, §4 and the §10 vectors."""

from __future__ import annotations

import pytest

from app.wechat.signing import (
    SignType,
    build_pay_params,
    new_nonce,
    sign,
    sign_type_of,
    string_to_sign,
    verify,
)
from app.wechat.xmlcodec import from_xml
from tests.wechat.conftest import API_KEY, APPID

# §10 A / §3.2: the official example.
OFFICIAL_KEY = "192006250b4c09247ec02edce69f6a2d"
OFFICIAL_FIELDS = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}

# §10 L1: a unified-order request.
L1_FIELDS: dict[str, object] = {
    "appid": APPID,
    "mch_id": "1900000109",
    "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "body": "示例商城-会员充值",
    "out_trade_no": "ORD20231115000001",
    "total_fee": 1,
    "spbill_create_ip": "203.0.113.7",
    "notify_url": "https://example.com/wxpay/notify",
    "trade_type": "JSAPI",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
}

# §10 L3: a payment notify, exactly as WeChat would POST it.
L3_NOTIFY = (
    b"<xml><appid><![CDATA[wx1234567890abcdef]]></appid><bank_type><![CDATA[OTHERS]]></bank_type>"
    b"<cash_fee>1</cash_fee><fee_type><![CDATA[CNY]]></fee_type><is_subscribe><![CDATA[N]]>"
    b"</is_subscribe><mch_id><![CDATA[1900000109]]></mch_id><nonce_str>"
    b"<![CDATA[dfPpVk0XtV5ZmBqnTtxLcE9CsQ3gHKyo]]></nonce_str><openid>"
    b"<![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid><out_trade_no><![CDATA[ORD20231115000001]]>"
    b"</out_trade_no><result_code><![CDATA[SUCCESS]]></result_code><return_code>"
    b"<![CDATA[SUCCESS]]></return_code><sign><![CDATA[E5F675BE369D7F2AAF4BEFF64846D172]]></sign>"
    b"<time_end><![CDATA[20231115141530]]></time_end><total_fee>1</total_fee><trade_type>"
    b"<![CDATA[JSAPI]]></trade_type><transaction_id><![CDATA[4200001234202311151234567890]]>"
    b"</transaction_id></xml>"
)


def test_official_vector_a_string_to_sign_is_byte_exact() -> None:
    assert string_to_sign(OFFICIAL_FIELDS, OFFICIAL_KEY) == (
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100"
        "&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
    )


def test_official_vector_a_md5_and_hmac_signatures() -> None:
    assert sign(OFFICIAL_FIELDS, OFFICIAL_KEY) == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert sign(OFFICIAL_FIELDS, OFFICIAL_KEY, SignType.HMAC_SHA256) == (
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )


def test_wechatpy_vector_c() -> None:
    fields = {"test1": "test1", "test2": "test2"}
    assert string_to_sign(fields, OFFICIAL_KEY) == (
        "test1=test1&test2=test2&key=192006250b4c09247ec02edce69f6a2d"
    )
    assert sign(fields, OFFICIAL_KEY) == "1E3A8D73B5A4AEE787C0F68B5DAB8520"
    assert sign(fields, OFFICIAL_KEY, SignType.HMAC_SHA256) == (
        "EDAC6D70D2FDF5A2382F8204FC96A1918017E46ACC5297F565ED1A7610ACF659"
    )


def test_vector_l1_unified_order_request_signatures() -> None:
    assert string_to_sign(L1_FIELDS, API_KEY) == (
        "appid=wx1234567890abcdef&body=示例商城-会员充值&mch_id=1900000109"
        "&nonce_str=5K8264ILTKCH16CQ2502SI8ZNMTM67VS&notify_url=https://example.com/wxpay/notify"
        "&openid=oUpF8uMuAJO_M2pxb1Q9zNjWeS6o&out_trade_no=ORD20231115000001"
        "&spbill_create_ip=203.0.113.7&total_fee=1&trade_type=JSAPI"
        "&key=0123456789abcdefghijklmnopqrstuv"
    )
    assert sign(L1_FIELDS, API_KEY) == "84EB93079076595A332FAB0207E17AC9"
    # §10 L1: with HMAC, sign_type is itself one of the signed fields.
    hmac_fields = {**L1_FIELDS, "sign_type": "HMAC-SHA256"}
    assert sign(hmac_fields, API_KEY, SignType.HMAC_SHA256) == (
        "D05F0248CC12C5FF454F3A1C8D6651642113579FFB086C645BD46A6048A9DD9D"
    )


def test_empty_values_are_dropped_but_zero_is_kept() -> None:
    # §3.1 step 1: "" and missing are dropped; the string "0" (and integer 0) are values.
    fields = {"b": "", "a": "0", "c": None, "d": 0}
    assert string_to_sign(fields, "k") == "a=0&d=0&key=k"


def test_sign_field_never_signs_itself_and_order_is_ascii() -> None:
    fields = {"sign": "WHATEVER", "b": "2", "B": "1", "a_b": "3", "a": "4"}
    assert string_to_sign(fields, "k") == "B=1&a=4&a_b=3&b=2&key=k"


def test_values_are_signed_raw_without_url_encoding_or_trimming() -> None:
    fields = {"notify_url": "https://x.test/a?b=c&d", "body": " 两 端 "}
    assert string_to_sign(fields, "k") == "body= 两 端 &notify_url=https://x.test/a?b=c&d&key=k"


def test_vector_l3_notify_verifies() -> None:
    assert verify(from_xml(L3_NOTIFY), API_KEY)


def test_vector_l3_notify_with_changed_total_fee_fails() -> None:
    fields = from_xml(L3_NOTIFY)
    fields["total_fee"] = "2"
    assert not verify(fields, API_KEY)


def test_verify_counts_fields_it_has_never_heard_of() -> None:
    # §3.1 step 6: never a whitelist. An added coupon field breaks the original signature...
    fields = from_xml(L3_NOTIFY)
    assert not verify({**fields, "coupon_id_0": "10000"}, API_KEY)
    # ...and a signature that covers it verifies.
    extended = {**fields, "coupon_id_0": "10000"}
    extended["sign"] = sign(extended, API_KEY)
    assert verify(extended, API_KEY)


def test_verify_refuses_a_missing_or_empty_sign() -> None:
    fields = from_xml(L3_NOTIFY)
    del fields["sign"]
    assert not verify(fields, API_KEY)
    assert not verify({**fields, "sign": ""}, API_KEY)


def test_verify_uses_the_given_sign_type() -> None:
    fields: dict[str, str] = {"a": "1", "sign_type": "HMAC-SHA256"}
    fields["sign"] = sign(fields, API_KEY, SignType.HMAC_SHA256)
    assert verify(fields, API_KEY, SignType.HMAC_SHA256)
    assert not verify(fields, API_KEY, SignType.MD5)


def test_verify_with_another_key_fails() -> None:
    assert not verify(from_xml(L3_NOTIFY), "another-key-0123456789abcdefghij")


def test_sign_type_of_reads_the_declared_type_else_the_default() -> None:
    assert sign_type_of({"sign_type": "HMAC-SHA256"}, SignType.MD5) is SignType.HMAC_SHA256
    assert sign_type_of({}, SignType.HMAC_SHA256) is SignType.HMAC_SHA256
    with pytest.raises(ValueError):
        sign_type_of({"sign_type": "SHA1"}, SignType.MD5)


def test_official_vector_b_pay_sign() -> None:
    # §4.1: appId is signed, not returned; timeStamp is a string of seconds.
    params = build_pay_params(
        appid="wxd678efh567hg6787",
        prepay_id="wx2017033010242291fcfe0db70013231072",
        api_key="qazwsxedcrfvtgbyhnujmikolp111111",
        sign_type=SignType.MD5,
        timestamp=1490840662,
        nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    )
    assert params["paySign"] == "22D9B4E54AB1950F51E0649E8810ACD6"
    hmac_params = build_pay_params(
        appid="wxd678efh567hg6787",
        prepay_id="wx2017033010242291fcfe0db70013231072",
        api_key="qazwsxedcrfvtgbyhnujmikolp111111",
        sign_type=SignType.HMAC_SHA256,
        timestamp=1490840662,
        nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    )
    assert hmac_params["paySign"] == (
        "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0"
    )


def test_vector_l2_pay_params_payload_is_exact() -> None:
    params = build_pay_params(
        appid=APPID,
        prepay_id="wx20231115061320123456789abcdef0000",
        api_key=API_KEY,
        sign_type=SignType.MD5,
        timestamp=1700000000,
        nonce="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
    )
    assert params == {
        "timeStamp": "1700000000",
        "nonceStr": "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
        "package": "prepay_id=wx20231115061320123456789abcdef0000",
        "signType": "MD5",
        "paySign": "8F0E4CC1AEF70CF9C3B544AC9E4813C5",
    }
    hmac_params = build_pay_params(
        appid=APPID,
        prepay_id="wx20231115061320123456789abcdef0000",
        api_key=API_KEY,
        sign_type=SignType.HMAC_SHA256,
        timestamp=1700000000,
        nonce="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
    )
    assert hmac_params["signType"] == "HMAC-SHA256"
    assert hmac_params["paySign"] == (
        "715A20A3BF78BBFB0FC793F8C84AC0CC52F1676876FD7369A07A98D9CF157DA0"
    )


def test_pay_params_default_to_now_and_a_fresh_nonce() -> None:
    first = build_pay_params(appid=APPID, prepay_id="p", api_key=API_KEY, sign_type=SignType.MD5)
    second = build_pay_params(appid=APPID, prepay_id="p", api_key=API_KEY, sign_type=SignType.MD5)
    assert len(first["timeStamp"]) == 10 and first["timeStamp"].isdigit()  # seconds, not ms
    assert first["nonceStr"] != second["nonceStr"]
    signed = {k: v for k, v in first.items() if k != "paySign"}
    assert first["paySign"] == sign({**signed, "appId": APPID}, API_KEY)


def test_nonces_are_random_and_at_most_32_characters() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 32 and n.isalnum() for n in nonces)
    assert len(new_nonce(16)) == 16
    with pytest.raises(ValueError):
        new_nonce(33)

"""``POST /pay/unifiedorder``: authentication, required fields, formats and re-entry (§2)."""

from __future__ import annotations

from datetime import timedelta

from app.wechat.signing import SignType, sign
from app.wechat.timefmt import to_wechat_time as beijing_stamp
from app.wechat.xmlcodec import to_xml
from tests.simulator.helpers import Merchant


async def test_an_order_gets_a_signed_36_character_prepay_id(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert (reply["return_code"], reply["result_code"]) == ("SUCCESS", "SUCCESS")
    assert reply["trade_type"] == "JSAPI"
    assert reply["prepay_id"].startswith("wx") and len(reply["prepay_id"]) == 36
    assert merchant.is_signed(reply)


async def test_an_hmac_request_gets_an_hmac_signed_answer(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())

    reply = await merchant.call("/pay/unifiedorder", fields, sign_type=SignType.HMAC_SHA256)

    assert reply["result_code"] == "SUCCESS"
    assert len(reply["sign"]) == 64
    assert merchant.is_signed(reply, SignType.HMAC_SHA256)
    assert not merchant.is_signed(reply, SignType.MD5)


async def test_a_wrong_signature_is_a_protocol_failure(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login(), sign="0" * 32)

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply == {"return_code": "FAIL", "return_msg": "签名错误"}
    assert merchant.simulator.state.orders == {}


async def test_a_signature_made_with_another_key_is_refused(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    fields |= {"appid": merchant.config.appid, "mch_id": merchant.config.mch_id, "nonce_str": "n"}
    fields["sign"] = sign(fields, "another-key-another-key-another-k")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["return_msg"] == "签名错误"


async def test_an_md5_signature_declared_as_hmac_is_refused(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    fields |= {"appid": merchant.config.appid, "mch_id": merchant.config.mch_id, "nonce_str": "n"}
    fields |= {"sign_type": "HMAC-SHA256"}
    fields["sign"] = sign(fields, merchant.config.api_key, SignType.MD5)

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["return_msg"] == "签名错误"


async def test_an_unknown_sign_type_is_refused(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login(), sign_type="SHA1")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply == {"return_code": "FAIL", "return_msg": "sign_type参数错误"}


async def test_another_merchant_is_refused_before_anything_else(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login(), mch_id="1234567890")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["return_code"] == "FAIL"
    assert "mch_id" in reply["return_msg"]


async def test_another_appid_is_appid_mchid_not_match(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login(), appid="wx0000000000000000")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert (reply["result_code"], reply["err_code"]) == ("FAIL", "APPID_MCHID_NOT_MATCH")
    assert merchant.is_signed(reply)


async def test_a_missing_required_field_is_lack_params(merchant: Merchant) -> None:
    for missing in ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url"):
        fields = merchant.order_fields(await merchant.login(), **{missing: None})

        reply = await merchant.call("/pay/unifiedorder", fields)

        assert (reply["err_code"], reply["err_code_des"]) == ("LACK_PARAMS", f"缺少参数{missing}")
        assert merchant.is_signed(reply)


async def test_jsapi_without_openid_is_lack_params(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login()) | {"openid": None}

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["err_code"] == "LACK_PARAMS"


async def test_missing_envelope_fields_are_protocol_failures(merchant: Merchant) -> None:
    body = to_xml({"appid": merchant.config.appid, "mch_id": merchant.config.mch_id})

    reply = await merchant.post("/pay/unifiedorder", body)

    assert reply == {"return_code": "FAIL", "return_msg": "缺少参数nonce_str"}


async def test_fields_beyond_their_length_or_format_are_refused(merchant: Merchant) -> None:
    openid = await merchant.login()
    bad_values = {
        "out_trade_no": "has spaces in it",
        "body": "x" * 128,
        "total_fee": "1.00",
        "spbill_create_ip": "not-an-ip",
        "notify_url": "https://example.com/notify?order=1",
        "time_expire": "2023-11-15 14:15",
    }
    for name, value in bad_values.items():
        reply = await merchant.call(
            "/pay/unifiedorder", merchant.order_fields(openid, **{name: value})
        )

        assert reply == {"return_code": "FAIL", "return_msg": f"{name}参数格式校验错误"}


async def test_a_zero_amount_is_refused(merchant: Merchant) -> None:
    reply = await merchant.call(
        "/pay/unifiedorder", merchant.order_fields(await merchant.login(), total_fee=0)
    )

    assert reply["return_msg"] == "total_fee参数格式校验错误"


async def test_an_openid_unknown_to_the_mini_program_is_refused(merchant: Merchant) -> None:
    fields = merchant.order_fields("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply == {"return_code": "FAIL", "return_msg": "appid和openid不匹配"}


async def test_other_trade_types_are_noauth_for_a_mini_program_merchant(
    merchant: Merchant,
) -> None:
    fields = merchant.order_fields(await merchant.login(), trade_type="NATIVE", product_id="p1")

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["err_code"] == "NOAUTH"


async def test_time_expire_under_five_minutes_is_invalid_request(merchant: Merchant) -> None:
    soon = beijing_stamp(merchant.simulator.clock.now() + timedelta(minutes=4))
    later = beijing_stamp(merchant.simulator.clock.now() + timedelta(minutes=6))
    openid = await merchant.login()

    too_short = await merchant.call(
        "/pay/unifiedorder", merchant.order_fields(openid, time_expire=soon)
    )
    long_enough = await merchant.call(
        "/pay/unifiedorder", merchant.order_fields(openid, time_expire=later)
    )

    assert too_short["err_code"] == "INVALID_REQUEST"
    assert long_enough["result_code"] == "SUCCESS"


async def test_identical_reentry_returns_the_same_prepay_id(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())

    first = await merchant.call("/pay/unifiedorder", fields)
    again = await merchant.call("/pay/unifiedorder", fields)  # new nonce, new signature

    assert again["result_code"] == "SUCCESS"
    assert again["prepay_id"] == first["prepay_id"]


async def test_reentry_after_two_hours_gets_a_fresh_prepay_id(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    first = await merchant.call("/pay/unifiedorder", fields)
    merchant.simulator.clock.advance(2 * 3600)

    again = await merchant.call("/pay/unifiedorder", fields)

    assert again["result_code"] == "SUCCESS"
    assert again["prepay_id"] != first["prepay_id"]


async def test_reentry_with_another_amount_is_invalid_request(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    await merchant.call("/pay/unifiedorder", fields)

    reply = await merchant.call("/pay/unifiedorder", fields | {"total_fee": 101})

    assert (reply["err_code"], reply["err_code_des"]) == ("INVALID_REQUEST", "201 商户订单号重复")


async def test_reentry_with_another_sign_type_is_invalid_request(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    await merchant.call("/pay/unifiedorder", fields)

    reply = await merchant.call("/pay/unifiedorder", fields, sign_type=SignType.HMAC_SHA256)

    assert reply["err_code"] == "INVALID_REQUEST"


async def test_reentry_for_another_payer_is_out_trade_no_used(merchant: Merchant) -> None:
    fields = merchant.order_fields(await merchant.login())
    await merchant.call("/pay/unifiedorder", fields)

    reply = await merchant.call("/pay/unifiedorder", fields | {"openid": await merchant.login()})

    assert reply["err_code"] == "OUT_TRADE_NO_USED"


async def test_reentry_of_a_paid_order_is_orderpaid(merchant: Merchant) -> None:
    order = await merchant.paid_order()
    fields = {k: v for k, v in order.items() if k not in ("prepay_id", "transaction_id")}

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["err_code"] == "ORDERPAID"


async def test_reentry_of_a_closed_order_is_orderclosed(merchant: Merchant) -> None:
    order = await merchant.place_order()
    await merchant.call("/pay/closeorder", {"out_trade_no": order["out_trade_no"]})
    fields = {k: v for k, v in order.items() if k != "prepay_id"}

    reply = await merchant.call("/pay/unifiedorder", fields)

    assert reply["err_code"] == "ORDERCLOSED"


async def test_malformed_xml_and_doctypes_are_refused(merchant: Merchant) -> None:
    broken = await merchant.post("/pay/unifiedorder", b"<xml><appid>wx")
    doctype = await merchant.post(
        "/pay/unifiedorder", b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml/>'
    )
    empty = await merchant.post("/pay/unifiedorder", b"")

    assert broken == doctype == {"return_code": "FAIL", "return_msg": "XML格式错误"}
    assert empty == {"return_code": "FAIL", "return_msg": "post数据为空"}

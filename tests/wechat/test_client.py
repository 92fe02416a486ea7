"""WeChatPayClient against a scripted WeChat behind httpx.MockTransport (PROTOCOL.md §2-§6).

Assertions are on the exact bytes sent, and on how each failure class is retried or not.
"""

from __future__ import annotations

import random

import httpx
import pytest
from pydantic import SecretStr

from app.wechat.client import WeChatPayClient, merchant_cert
from app.wechat.crypto import encrypt_req_info
from app.wechat.errors import InvalidNotification, WeChatRejected, WeChatUnavailable
from app.wechat.models import (
    CloseOrderRequest,
    OrderQueryRequest,
    RefundQueryRequest,
    RefundRequest,
    UnifiedOrderRequest,
    WireRefundStatus,
    WireTradeState,
)
from app.wechat.retry import RetryPolicy
from app.wechat.signing import SignType, sign
from app.wechat.xmlcodec import from_xml, to_signed_xml, to_xml
from tests.hermetic import hermetic_settings
from tests.wechat.conftest import (
    API_BASE,
    API_KEY,
    APPID,
    MCH_ID,
    PayClientFactory,
    ScriptedWeChat,
    business_error,
    signed_reply,
)
from tests.wechat.test_signing import L3_NOTIFY
from tests.wechat.vectors_refund import G_API_KEY, G_REQ_INFO, L4_PLAINTEXT

ORDER = UnifiedOrderRequest(
    body="示例商城-会员充值",
    out_trade_no="ORD20231115000001",
    total_fee=1,
    spbill_create_ip="203.0.113.7",
    notify_url="https://example.com/wxpay/notify",
    openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
)
PREPAID = signed_reply(trade_type="JSAPI", prepay_id="wx201411101639507cbf6ffd8b0779950874")


def sent_fields(request: httpx.Request) -> dict[str, str]:
    return from_xml(request.content)


# --- what goes on the wire -------------------------------------------------------------------


async def test_unified_order_posts_exactly_the_signed_envelope(
    make_pay_client: PayClientFactory,
) -> None:
    wechat = ScriptedWeChat(PREPAID)
    await make_pay_client(wechat).unified_order(ORDER)

    [request] = wechat.requests
    assert request.method == "POST"
    assert str(request.url) == f"{API_BASE}/pay/unifiedorder"
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    nonce = sent_fields(request)["nonce_str"]
    # The only free choice is the nonce; everything else, sign included, is fixed by §3.
    expected = {**ORDER.to_fields(), "appid": APPID, "mch_id": MCH_ID, "nonce_str": nonce}
    assert request.content == to_signed_xml(expected, API_KEY)
    assert sent_fields(request)["sign"] == sign(expected, API_KEY)
    assert "sign_type" not in sent_fields(request)  # MD5 is the default and need not be sent


async def test_hmac_requests_declare_and_sign_their_sign_type(
    make_pay_client: PayClientFactory,
) -> None:
    wechat = ScriptedWeChat(
        signed_reply(sign_type=SignType.HMAC_SHA256, trade_type="JSAPI", prepay_id="wx1")
    )
    client = make_pay_client(wechat, sign_type=SignType.HMAC_SHA256)
    await client.unified_order(ORDER)

    fields = sent_fields(wechat.requests[0])
    assert fields["sign_type"] == "HMAC-SHA256"
    assert len(fields["sign"]) == 64
    assert fields["sign"] == sign(fields, API_KEY, SignType.HMAC_SHA256)


async def test_unified_order_returns_the_verified_prepay_id(
    make_pay_client: PayClientFactory,
) -> None:
    response = await make_pay_client(ScriptedWeChat(PREPAID)).unified_order(ORDER)
    assert response.prepay_id == "wx201411101639507cbf6ffd8b0779950874"
    assert response.raw == from_xml(PREPAID)


async def test_order_query_close_and_refund_query_use_their_paths(
    make_pay_client: PayClientFactory,
) -> None:
    wechat = ScriptedWeChat(
        signed_reply(out_trade_no="A1", trade_state="NOTPAY"),
        signed_reply(),
        signed_reply(
            transaction_id="T1",
            out_trade_no="A1",
            total_fee=100,
            refund_count=1,
            out_refund_no_0="R1",
            refund_id_0="W1",
            refund_fee_0=100,
            refund_status_0="SUCCESS",
        ),
    )
    client = make_pay_client(wechat)
    query = await client.order_query(OrderQueryRequest(out_trade_no="A1"))
    await client.close_order(CloseOrderRequest(out_trade_no="A1"))
    refunds = await client.refund_query(RefundQueryRequest(out_refund_no="R1"))

    assert query.trade_state is WireTradeState.NOTPAY
    assert refunds.refunds[0].refund_status is WireRefundStatus.SUCCESS
    paths = [r.url.path for r in wechat.requests]
    assert paths == ["/pay/orderquery", "/pay/closeorder", "/pay/refundquery"]
    assert sent_fields(wechat.requests[1])["out_trade_no"] == "A1"
    assert sent_fields(wechat.requests[2])["out_refund_no"] == "R1"


async def test_refunds_go_through_the_mutual_tls_client(
    make_pay_client: PayClientFactory,
) -> None:
    # §6.3: /secapi/pay/refund needs the merchant certificate, which only refund_http carries.
    plain, tls = (
        ScriptedWeChat(b"unused"),
        ScriptedWeChat(
            signed_reply(
                transaction_id="T1",
                out_trade_no="A1",
                out_refund_no="R1",
                refund_id="W1",
                refund_fee=50,
                total_fee=100,
            )
        ),
    )
    client = make_pay_client(plain, refund_script=tls)
    refund = await client.refund(
        RefundRequest(out_trade_no="A1", out_refund_no="R1", total_fee=100, refund_fee=50)
    )
    assert refund.refund_id == "W1" and refund.refund_fee == 50
    assert plain.requests == []
    assert [r.url.path for r in tls.requests] == ["/secapi/pay/refund"]
    fields = sent_fields(tls.requests[0])
    assert (fields["out_refund_no"], fields["refund_fee"], fields["total_fee"]) == (
        "R1",
        "50",
        "100",
    )


# --- retries ---------------------------------------------------------------------------------


async def test_systemerror_is_retried_with_identical_business_fields(
    make_pay_client: PayClientFactory,
) -> None:
    # §2.2: SYSTEMERROR -> call again with the same parameters; re-entry returns the same prepay_id.
    wechat = ScriptedWeChat(business_error("SYSTEMERROR", "系统超时"), PREPAID)
    response = await make_pay_client(wechat).unified_order(ORDER)

    assert response.prepay_id.startswith("wx2014")
    first, second = (sent_fields(r) for r in wechat.requests)
    volatile = {"nonce_str", "sign"}
    assert {k: v for k, v in first.items() if k not in volatile} == {
        k: v for k, v in second.items() if k not in volatile
    }
    assert first["nonce_str"] != second["nonce_str"]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.Response(503, text="busy"),
        httpx.Response(502),
        httpx.Response(200, content=b"<html>gateway error</html>"),
        httpx.Response(200, content=b""),
    ],
    ids=["timeout", "connect-error", "503", "502", "html-body", "empty-body"],
)
async def test_unavailable_upstream_is_retried_then_succeeds(
    make_pay_client: PayClientFactory, failure: httpx.Response | Exception
) -> None:
    wechat = ScriptedWeChat(failure, PREPAID)
    await make_pay_client(wechat).unified_order(ORDER)
    assert len(wechat.requests) == 2


async def test_retries_stop_after_max_attempts(make_pay_client: PayClientFactory) -> None:
    wechat = ScriptedWeChat(httpx.Response(500))
    client = make_pay_client(wechat, retry=RetryPolicy(max_attempts=4, base_delay=0))
    with pytest.raises(WeChatUnavailable, match="HTTP 500"):
        await client.order_query(OrderQueryRequest(out_trade_no="A1"))
    assert len(wechat.requests) == 4


async def test_refund_bizerr_need_retry_is_retried_under_the_same_out_refund_no(
    make_pay_client: PayClientFactory,
) -> None:
    # §6.3: BIZERR_NEED_RETRY -> same out_refund_no, same parameters.
    tls = ScriptedWeChat(business_error("BIZERR_NEED_RETRY", "并发冲突"))
    client = make_pay_client(ScriptedWeChat(b"unused"), refund_script=tls)
    with pytest.raises(WeChatUnavailable) as caught:
        await client.refund(
            RefundRequest(out_trade_no="A1", out_refund_no="R1", total_fee=100, refund_fee=100)
        )
    assert caught.value.err_code == "BIZERR_NEED_RETRY"
    assert len(tls.requests) == 3
    assert {sent_fields(r)["out_refund_no"] for r in tls.requests} == {"R1"}


class _CeilingRandom(random.Random):
    """Always draws the top of the jitter range, so the backoff caps become visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_backoff_doubles_up_to_its_cap(make_pay_client: PayClientFactory) -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(
        max_attempts=5, base_delay=0.1, max_delay=0.25, sleep=record, rng=_CeilingRandom()
    )
    with pytest.raises(WeChatUnavailable):
        await make_pay_client(ScriptedWeChat(httpx.Response(500)), retry=policy).order_query(
            OrderQueryRequest(out_trade_no="A1")
        )
    assert slept == [0.1, 0.2, 0.25, 0.25]


def test_jitter_stays_inside_the_capped_window() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=0.25, rng=random.Random(7))
    delays = [policy.delay_before(attempt) for attempt in (2, 3, 4) for _ in range(200)]
    assert all(0 <= d <= 0.25 for d in delays)
    assert max(delays[:200]) <= 0.1 < max(delays[200:])  # the window grows
    assert len(set(delays)) > 500  # and the draws are spread, not one fixed delay


# --- final rejections ------------------------------------------------------------------------


async def test_signerror_response_is_rejected_without_retry(
    make_pay_client: PayClientFactory,
) -> None:
    wechat = ScriptedWeChat(business_error("SIGNERROR", "签名错误"))
    with pytest.raises(WeChatRejected) as caught:
        await make_pay_client(wechat).unified_order(ORDER)
    assert (caught.value.err_code, caught.value.err_code_des) == ("SIGNERROR", "签名错误")
    assert caught.value.reason == "签名错误"
    assert len(wechat.requests) == 1


@pytest.mark.parametrize(
    "err_code", ["ORDERPAID", "ORDERCLOSED", "OUT_TRADE_NO_USED", "INVALID_REQUEST", "NEW_CODE"]
)
async def test_business_refusals_are_final(
    make_pay_client: PayClientFactory, err_code: str
) -> None:
    # §2.2: only SYSTEMERROR (and BIZERR_NEED_RETRY for refunds) are worth another call;
    # unknown codes are treated as final too.
    wechat = ScriptedWeChat(business_error(err_code, "说明"))
    with pytest.raises(WeChatRejected) as caught:
        await make_pay_client(wechat).unified_order(ORDER)
    assert caught.value.err_code == err_code
    assert len(wechat.requests) == 1


async def test_protocol_failure_carries_return_msg_and_is_not_retried(
    make_pay_client: PayClientFactory,
) -> None:
    # §2.2 notes: many request-level failures are return_code=FAIL with only return_msg.
    fail = to_xml({"return_code": "FAIL", "return_msg": "appid和mch_id不匹配"})
    wechat = ScriptedWeChat(fail)
    with pytest.raises(WeChatRejected) as caught:
        await make_pay_client(wechat).unified_order(ORDER)
    assert caught.value.err_code is None
    assert caught.value.return_msg == caught.value.reason == "appid和mch_id不匹配"
    assert len(wechat.requests) == 1


async def test_a_client_error_status_is_final(make_pay_client: PayClientFactory) -> None:
    wechat = ScriptedWeChat(httpx.Response(404))
    with pytest.raises(WeChatRejected, match="HTTP 404"):
        await make_pay_client(wechat).unified_order(ORDER)
    assert len(wechat.requests) == 1


# --- untrusted answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        to_xml(
            {
                "return_code": "SUCCESS",
                "result_code": "SUCCESS",
                "prepay_id": "wx1",
                "trade_type": "JSAPI",
            }
        ),
        signed_reply(key="someone-elses-key-0123456789abcd", trade_type="JSAPI", prepay_id="wx1"),
        signed_reply(sign_type=SignType.HMAC_SHA256, trade_type="JSAPI", prepay_id="wx1"),
        signed_reply(appid="wx-other", trade_type="JSAPI", prepay_id="wx1"),
        signed_reply(mch_id="1234", trade_type="JSAPI", prepay_id="wx1"),
    ],
    ids=["unsigned", "wrong-key", "other-sign-type", "other-appid", "other-mch_id"],
)
async def test_a_success_that_does_not_verify_is_never_trusted(
    make_pay_client: PayClientFactory, reply: bytes
) -> None:
    with pytest.raises(WeChatUnavailable):
        await make_pay_client(ScriptedWeChat(reply)).unified_order(ORDER)


async def test_a_forged_business_error_is_not_taken_at_its_word(
    make_pay_client: PayClientFactory,
) -> None:
    # An unsigned "ORDERPAID" must not make us mark anything paid or final.
    forged = to_xml({"return_code": "SUCCESS", "result_code": "FAIL", "err_code": "ORDERPAID"})
    with pytest.raises(WeChatUnavailable):
        await make_pay_client(ScriptedWeChat(forged)).unified_order(ORDER)


async def test_a_signed_answer_missing_required_fields_is_unavailable(
    make_pay_client: PayClientFactory,
) -> None:
    with pytest.raises(WeChatUnavailable, match="prepay_id"):
        await make_pay_client(ScriptedWeChat(signed_reply(trade_type="JSAPI"))).unified_order(ORDER)


async def test_an_oversized_answer_is_not_buffered(make_pay_client: PayClientFactory) -> None:
    wechat = ScriptedWeChat(httpx.Response(200, content=b"<xml>" + b" " * 70_000 + b"</xml>"))
    with pytest.raises(WeChatUnavailable, match="more than"):
        await make_pay_client(wechat).order_query(OrderQueryRequest(out_trade_no="A1"))


async def test_errors_never_carry_the_api_key(make_pay_client: PayClientFactory) -> None:
    wechat = ScriptedWeChat(httpx.ConnectError(f"cannot connect; key was {API_KEY}"))
    client = make_pay_client(wechat, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(WeChatUnavailable) as caught:
        await client.unified_order(ORDER)
    assert API_KEY not in str(caught.value) + repr(caught.value) + repr(client)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- payment parameters and notifies ---------------------------------------------------------


async def test_pay_params_use_our_appid_and_sign_type(make_pay_client: PayClientFactory) -> None:
    client = make_pay_client(ScriptedWeChat(b""), sign_type=SignType.HMAC_SHA256)
    params = client.pay_params("wx2023")
    assert params["package"] == "prepay_id=wx2023"
    assert params["signType"] == "HMAC-SHA256"
    unsigned = {k: v for k, v in params.items() if k != "paySign"}
    assert params["paySign"] == sign({**unsigned, "appId": APPID}, API_KEY, SignType.HMAC_SHA256)


async def test_vector_l3_payment_notify_is_accepted(make_pay_client: PayClientFactory) -> None:
    notify = make_pay_client(ScriptedWeChat(b"")).parse_payment_notify(L3_NOTIFY)
    assert notify.is_paid
    assert (notify.out_trade_no, notify.total_fee) == ("ORD20231115000001", 1)
    assert notify.transaction_id == "4200001234202311151234567890"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (L3_NOTIFY.replace(b"<total_fee>1<", b"<total_fee>2<"), "signature"),
        (b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + L3_NOTIFY, "XML"),
        (b"<xml><return_code>FAIL</return_code></xml>", "return_code"),
        (L3_NOTIFY.replace(b"<sign>", b"<sign_type>SHA1</sign_type><sign>"), "sign_type"),
    ],
    ids=["tampered-amount", "doctype", "fail", "unknown-sign-type"],
)
async def test_bad_payment_notifies_are_refused(
    make_pay_client: PayClientFactory, body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidNotification, match=reason):
        make_pay_client(ScriptedWeChat(b"")).parse_payment_notify(body)


async def test_a_validly_signed_notify_for_another_merchant_is_refused(
    make_pay_client: PayClientFactory,
) -> None:
    fields = {**from_xml(L3_NOTIFY), "mch_id": "1111111111"}
    body = to_signed_xml(fields, API_KEY)
    with pytest.raises(InvalidNotification, match="not ours"):
        make_pay_client(ScriptedWeChat(b"")).parse_payment_notify(body)


async def test_a_notify_declaring_hmac_is_verified_with_hmac(
    make_pay_client: PayClientFactory,
) -> None:
    # §3.1 step 7: a notify's own sign_type wins over the configured default.
    fields = {**from_xml(L3_NOTIFY), "sign_type": "HMAC-SHA256"}
    body = to_signed_xml(fields, API_KEY, SignType.HMAC_SHA256)
    notify = make_pay_client(ScriptedWeChat(b"")).parse_payment_notify(body)
    assert notify.sign_type == "HMAC-SHA256"


def _refund_notify(req_info: str, appid: str = APPID, mch_id: str = MCH_ID) -> bytes:
    return to_xml(
        {
            "return_code": "SUCCESS",
            "appid": appid,
            "mch_id": mch_id,
            "nonce_str": "c1c237efc87ee8dfcb3f9124b63a4d94",
            "req_info": req_info,
        }
    )


async def test_vector_l4_refund_notify_decrypts(make_pay_client: PayClientFactory) -> None:
    body = _refund_notify(encrypt_req_info(L4_PLAINTEXT, API_KEY))
    info = make_pay_client(ScriptedWeChat(b"")).decrypt_refund_notify(body)
    assert (info.out_refund_no, info.refund_fee, info.refund_status) == (
        "RF20231115000001",
        1,
        WireRefundStatus.SUCCESS,
    )
    assert info.refund_recv_accout == "支付用户零钱"


async def test_vector_g_refund_notify_decrypts(make_pay_client: PayClientFactory) -> None:
    client = make_pay_client(
        ScriptedWeChat(b""), appid="wx4f4bc4dec97d474b", mch_id="12345678", api_key=G_API_KEY
    )
    info = client.decrypt_refund_notify(
        _refund_notify(G_REQ_INFO, appid="wx4f4bc4dec97d474b", mch_id="12345678")
    )
    assert info.out_trade_no == "2020010418301551404339261814"
    assert info.total_fee == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_refund_notify(encrypt_req_info(L4_PLAINTEXT, G_API_KEY)), "req_info"),
        (_refund_notify(encrypt_req_info(L4_PLAINTEXT, API_KEY), mch_id="1"), "not ours"),
        (_refund_notify(encrypt_req_info(b"<xml><a>1</a></xml>", API_KEY)), "XML"),
        (to_xml({"return_code": "FAIL", "return_msg": "x"}), "req_info"),
    ],
    ids=["wrong-key", "other-merchant", "wrong-inner-root", "fail"],
)
async def test_bad_refund_notifies_are_refused(
    make_pay_client: PayClientFactory, body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidNotification, match=reason):
        make_pay_client(ScriptedWeChat(b"")).decrypt_refund_notify(body)


# --- construction ----------------------------------------------------------------------------


async def test_from_settings_takes_ids_key_sign_type_and_attempts() -> None:
    settings = hermetic_settings(
        appid="wxsettings",
        mch_id="42",
        api_key=SecretStr("k" * 32),
        sign_type=SignType.HMAC_SHA256,
        pay_api_base="https://pay.example",
        wechat_max_attempts=2,
        mch_cert_path="/certs/apiclient_cert.pem",
        mch_key_path="/certs/apiclient_key.pem",
    )
    wechat = ScriptedWeChat(httpx.Response(500))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wechat)) as http:
        client = WeChatPayClient.from_settings(settings, http)
        assert (client.appid, client.mch_id, client.sign_type) == (
            "wxsettings",
            "42",
            SignType.HMAC_SHA256,
        )
        with pytest.raises(WeChatUnavailable):
            await client.close_order(CloseOrderRequest(out_trade_no="A1"))
    assert len(wechat.requests) == 2
    assert str(wechat.requests[0].url) == "https://pay.example/pay/closeorder"
    assert merchant_cert(settings) == ("/certs/apiclient_cert.pem", "/certs/apiclient_key.pem")
    assert merchant_cert(settings.model_copy(update={"mch_key_path": None})) is None

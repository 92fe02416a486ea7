"""The v3 client against a stand-in WeChat on httpx.MockTransport (PROTOCOL.md §8).

The stand-in checks our Authorization header with the merchant's public key and signs its
answers as WeChat does; both roles use the §10 H test key pair.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from pydantic import SecretStr

from app.wechat.errors import InvalidNotification, RefusalKind, WeChatRejected, WeChatUnavailable
from app.wechat.retry import RetryPolicy
from app.wechat.v3 import (
    MerchantSigner,
    load_private_key,
    load_public_key,
    request_message,
    rsa_sign,
)
from app.wechat.v3client import WeChatPayV3Client
from app.wechat.v3trust import WeChatPayTrust
from tests.wechat.vectors_v3 import (
    L5_API_V3_KEY,
    L5_BODY,
    L5_NONCE,
    L5_SIGNATURE,
    L5_TIMESTAMP,
    TEST_PRIVATE_KEY,
    TEST_PUBLIC_KEY,
)

APPID = "wx1234567890abcdef"
MCHID = "1900000109"
KEY_ID = "PUB_KEY_ID_0000000000000000000000000000TEST"
NOW = 1700028931
PRIVATE = load_private_key(TEST_PRIVATE_KEY)
PUBLIC = load_public_key(TEST_PUBLIC_KEY)

Answer = Callable[[httpx.Request], httpx.Response]


def signed(status: int, body: bytes, *, serial: str = KEY_ID, at: int = NOW) -> httpx.Response:
    """An answer signed as WeChat signs it (§8.3)."""
    nonce = secrets.token_hex(16)
    message = f"{at}\n{nonce}\n{body.decode()}\n"
    headers = {
        "Wechatpay-Timestamp": str(at),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature": rsa_sign(message, PRIVATE),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return httpx.Response(status, content=body, headers=headers)


def tampered(response: httpx.Response) -> httpx.Response:
    """The same signature headers over a body changed on the way."""
    return httpx.Response(200, content=b'{"prepay_id":"wx2"}', headers=response.headers)


def our_signature_holds(request: httpx.Request) -> bool:
    """WeChat's check of our Authorization header (§8.2)."""
    scheme, _, params = request.headers["Authorization"].partition(" ")
    fields = {k: v.strip('"') for k, v in (p.split("=", 1) for p in params.split(","))}
    url = request.url.raw_path.decode()
    message = request_message(
        request.method, url, fields["timestamp"], fields["nonce_str"], request.content
    )
    try:
        PUBLIC.verify(base64.b64decode(fields["signature"]), message.encode(), PKCS1v15(), SHA256())
    except InvalidSignature:
        return False
    return scheme == "WECHATPAY2-SHA256-RSA2048" and fields["mchid"] == MCHID


def client_at(
    http: httpx.AsyncClient, trust: WeChatPayTrust, retry: RetryPolicy
) -> WeChatPayV3Client:
    """The merchant of the published vectors (PROTOCOL.md §10) at WeChat's address, over
    ``http`` (a stand-in WeChat), trusting ``trust``, at the vectors' fixed time."""
    return WeChatPayV3Client(
        http,
        api_base="https://api.mch.weixin.qq.com",
        appid=APPID,
        signer=MerchantSigner(MCHID, "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB", PRIVATE),
        trust=trust,
        api_v3_key=SecretStr(L5_API_V3_KEY),
        retry=retry,
        clock=lambda: NOW,
    )


@pytest.fixture
async def wechat() -> AsyncIterator[Callable[[list[Answer]], WeChatPayV3Client]]:
    """A client whose calls are answered, in turn, by the given functions."""
    seen: list[httpx.Request] = []
    clients: list[httpx.AsyncClient] = []

    def make(answers: list[Answer]) -> WeChatPayV3Client:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v3/certificates":
                # A merchant on the public key has no platform certificates (§8.6).
                body = {"code": "RESOURCE_NOT_EXISTS", "message": "无平台证书"}
                return httpx.Response(404, json=body)
            seen.append(request)
            if not our_signature_holds(request):
                return httpx.Response(401, json={"code": "SIGN_ERROR", "message": "签名错误"})
            return answers.pop(0)(request)

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        clients.append(http)
        return client_at(
            http, WeChatPayTrust((KEY_ID, PUBLIC)), RetryPolicy(max_attempts=2, base_delay=0)
        )

    yield make
    for http in clients:
        await http.aclose()


PREPAY = {
    "description": "短信平台-短信套餐购买",
    "out_trade_no": "20261127031500K3J9QX2M7ZPA",
    "total": 990,
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "notify_url": "https://pay.example.com/wechat/pay/v3/notify",
    "payer_client_ip": "203.0.113.7",
}


async def test_prepay_sends_a_signed_order_and_returns_the_prepay_id(wechat: Any) -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        assert request.url.path == "/v3/pay/transactions/jsapi"
        return signed(200, b'{"prepay_id":"wx201410272009395522657a690389285100"}')

    prepay_id = await wechat([answer]).jsapi_prepay(**PREPAY)

    assert prepay_id == "wx201410272009395522657a690389285100"
    assert sent == [
        {
            "appid": APPID,
            "mchid": MCHID,
            "description": "短信平台-短信套餐购买",
            "out_trade_no": PREPAY["out_trade_no"],
            "notify_url": PREPAY["notify_url"],
            "amount": {"total": 990, "currency": "CNY"},
            "payer": {"openid": PREPAY["openid"]},
            "scene_info": {"payer_client_ip": "203.0.113.7"},
        }
    ]


async def test_a_retry_resends_the_same_bytes(wechat: Any) -> None:
    bodies: list[bytes] = []

    def busy(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(500, json={"code": "SYSTEM_ERROR", "message": "系统错误"})

    def ok(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return signed(200, b'{"prepay_id":"wx1"}')

    assert await wechat([busy, ok]).jsapi_prepay(**PREPAY) == "wx1"
    assert len(bodies) == 2 and bodies[0] == bodies[1]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda r: httpx.Response(200, json={"prepay_id": "wx1"}), WeChatUnavailable),  # unsigned
        (
            lambda r: signed(200, b'{"prepay_id":"wx1"}', serial="PUB_KEY_ID_OTHER"),
            WeChatUnavailable,
        ),
        (lambda r: signed(200, b'{"prepay_id":"wx1"}', at=NOW - 600), WeChatUnavailable),
        (lambda r: tampered(signed(200, b'{"prepay_id":"wx1"}')), WeChatUnavailable),
        (lambda r: signed(200, b"[]"), WeChatUnavailable),
        (lambda r: httpx.Response(429, json={"code": "FREQUENCY_LIMITED"}), WeChatUnavailable),
    ],
    ids=["unsigned", "unknown-key", "stale", "tampered", "not-an-object", "rate-limited"],
)
async def test_answers_that_cannot_be_trusted_leave_the_outcome_unknown(
    wechat: Any, answer: Answer, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await wechat([answer, answer]).jsapi_prepay(**PREPAY)


async def test_a_business_refusal_is_final_and_carries_wechats_code(wechat: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": "OUT_TRADE_NO_USED", "message": "商户订单号重复"})

    with pytest.raises(WeChatRejected) as refused:
        await wechat([refuse]).jsapi_prepay(**PREPAY)

    assert refused.value.err_code == "OUT_TRADE_NO_USED"
    assert "商户订单号重复" in refused.value.reason


async def test_query_and_close(wechat: Any) -> None:
    paths: list[str] = []
    transaction = {
        "appid": APPID, "mchid": MCHID, "out_trade_no": PREPAY["out_trade_no"],
        "transaction_id": "4200001234202311151234567890", "trade_state": "SUCCESS",
        "amount": {"total": 990, "payer_total": 990, "currency": "CNY"},
    }  # fmt: skip

    def queried(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return signed(200, json.dumps(transaction).encode())

    def closed(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        assert json.loads(request.content) == {"mchid": MCHID}
        return signed(204, b"")

    client = wechat([queried, closed])
    found = await client.query(PREPAY["out_trade_no"])
    await client.close(PREPAY["out_trade_no"])

    assert (found.trade_state, found.amount and found.amount.total) == ("SUCCESS", 990)
    assert paths == [
        f"/v3/pay/transactions/out-trade-no/{PREPAY['out_trade_no']}?mchid={MCHID}",
        f"/v3/pay/transactions/out-trade-no/{PREPAY['out_trade_no']}/close",
    ]


def test_v3_pay_params_use_rsa(wechat: Any) -> None:
    params = wechat([]).pay_params("wx1")

    assert params["signType"] == "RSA"
    assert params["package"] == "prepay_id=wx1"
    assert params["timeStamp"] == str(NOW)


L5_HEADERS = {
    "Wechatpay-Timestamp": L5_TIMESTAMP,
    "Wechatpay-Nonce": L5_NONCE,
    "Wechatpay-Signature": L5_SIGNATURE,
    "Wechatpay-Serial": KEY_ID,
}


async def test_the_payment_notify_is_verified_then_decrypted(wechat: Any) -> None:
    # §10 L5: signed with the test key, encrypted with the APIv3 key.
    transaction = await wechat([]).parse_payment_notify(L5_HEADERS, L5_BODY)

    assert transaction.out_trade_no == "ORD20231115000001"
    assert transaction.trade_state == "SUCCESS"
    assert transaction.amount is not None and transaction.amount.total == 1


@pytest.mark.parametrize(
    ("headers", "body", "kind"),
    [
        (L5_HEADERS, L5_BODY.replace(b"EV-2018", b"EV-2019"), RefusalKind.SIGNATURE),
        ({**L5_HEADERS, "Wechatpay-Serial": "PUB_KEY_ID_OTHER"}, L5_BODY, RefusalKind.SIGNATURE),
        ({k: v for k, v in L5_HEADERS.items() if k != "Wechatpay-Signature"}, L5_BODY,
         RefusalKind.SIGNATURE),
    ],
)  # fmt: skip
async def test_a_notify_not_signed_by_wechat_is_refused(
    wechat: Any, headers: dict[str, str], body: bytes, kind: RefusalKind
) -> None:
    with pytest.raises(InvalidNotification) as refused:
        await wechat([]).parse_payment_notify(headers, body)

    assert refused.value.kind is kind


async def test_a_genuine_notify_for_another_merchant_is_refused(wechat: Any) -> None:
    body = _notify({"appid": APPID, "mchid": "1000000001", "out_trade_no": "X1",
                    "trade_state": "SUCCESS"})  # fmt: skip
    response = signed(200, body)

    with pytest.raises(InvalidNotification) as refused:
        await wechat([]).parse_payment_notify(response.headers, body)

    assert refused.value.kind is RefusalKind.MERCHANT


async def test_a_notify_encrypted_with_another_key_is_refused(wechat: Any) -> None:
    body = _notify({"appid": APPID, "mchid": MCHID}, key="K" * 32)

    with pytest.raises(InvalidNotification) as refused:
        await wechat([]).parse_payment_notify(signed(200, body).headers, body)

    assert refused.value.kind is RefusalKind.DECRYPTION


def _notify(transaction: dict[str, Any], key: str = L5_API_V3_KEY) -> bytes:
    nonce = "fdasflkja484"
    ciphertext = AESGCM(key.encode()).encrypt(
        nonce.encode(), json.dumps(transaction).encode(), b"transaction"
    )
    resource = {
        "original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "associated_data": "transaction", "nonce": nonce,
    }  # fmt: skip
    envelope = {
        "id": "EV-1",
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "resource": resource,
    }  # as §8.5 shows it
    return json.dumps(envelope, separators=(",", ":")).encode()  # fmt: skip


REFUND = {
    "out_refund_no": "R20261127031500K3J9QX2M7ZPA",
    "out_trade_no": "20261127031500K3J9QX2M7ZPA",
    "refund_id": "50000000382019052709732678859",
    "transaction_id": "4200001234202311151234567890",
    "status": "PROCESSING",
    "amount": {"total": 990, "refund": 400, "payer_total": 990, "payer_refund": 400},
}


async def test_refund_and_refund_query(wechat: Any) -> None:
    sent: list[tuple[str, bytes]] = []

    def accepted(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.raw_path.decode(), request.content))
        return signed(200, json.dumps(REFUND).encode())

    def settled(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.raw_path.decode(), request.content))
        return signed(200, json.dumps(REFUND | {"status": "SUCCESS"}).encode())

    client = wechat([accepted, settled])
    refund = await client.refund(
        out_trade_no=REFUND["out_trade_no"], out_refund_no=REFUND["out_refund_no"],
        refund=400, total=990, reason="套餐未使用",
    )  # fmt: skip
    later = await client.refund_query(REFUND["out_refund_no"])

    assert (refund.status, refund.amount.refund) == ("PROCESSING", 400)
    assert later.status == "SUCCESS"
    assert sent[0][0] == "/v3/refund/domestic/refunds"
    assert json.loads(sent[0][1]) == {
        "out_trade_no": REFUND["out_trade_no"],
        "out_refund_no": REFUND["out_refund_no"],
        "amount": {"refund": 400, "total": 990, "currency": "CNY"},
        "reason": "套餐未使用",
    }
    assert sent[1] == (f"/v3/refund/domestic/refunds/{REFUND['out_refund_no']}", b"")


async def test_the_refund_notify_is_verified_decrypted_and_ours(wechat: Any) -> None:
    notice = {k: v for k, v in REFUND.items() if k != "status"}
    ours = _notify(notice | {"mchid": MCHID, "refund_status": "SUCCESS"})
    theirs = _notify(notice | {"mchid": "1000000001", "refund_status": "SUCCESS"})
    client = wechat([])

    refund = await client.parse_refund_notify(signed(200, ours).headers, ours)
    with pytest.raises(InvalidNotification) as refused:
        await client.parse_refund_notify(signed(200, theirs).headers, theirs)

    assert (refund.status, refund.amount.refund) == ("SUCCESS", 400)
    assert refused.value.kind is RefusalKind.MERCHANT


async def test_notify_headers_are_read_whatever_their_case(wechat: Any) -> None:
    # dict(request.headers) in Starlette gives lower-case names.
    lower = {name.lower(): value for name, value in L5_HEADERS.items()}

    notice = await wechat([]).parse_payment_notify(lower, L5_BODY)
    assert notice.out_trade_no == "ORD20231115000001"


@pytest.mark.parametrize(
    ("transaction", "kind"),
    [
        ({"appid": "wx0000000000000000", "mchid": MCHID, "amount": {"total": 1}},
         RefusalKind.MERCHANT),
        ({"appid": APPID, "mchid": MCHID}, RefusalKind.FIELDS),  # no amount to check
    ],
    ids=["another-appid", "no-amount"],
)  # fmt: skip
async def test_a_genuine_notify_that_is_not_usable_is_refused(
    wechat: Any, transaction: dict[str, Any], kind: RefusalKind
) -> None:
    body = _notify({"out_trade_no": "X1", "trade_state": "SUCCESS"} | transaction)

    with pytest.raises(InvalidNotification) as refused:
        await wechat([]).parse_payment_notify(signed(200, body).headers, body)

    assert refused.value.kind is kind


async def test_an_unsigned_no_content_answer_is_not_trusted(wechat: Any) -> None:
    with pytest.raises(WeChatUnavailable):
        await wechat([lambda r: httpx.Response(204)] * 2).close(PREPAY["out_trade_no"])


async def test_a_forged_signature_on_an_error_makes_it_untrusted(wechat: Any) -> None:
    def forged(request: httpx.Request) -> httpx.Response:
        real = signed(404, b'{"code":"ORDER_NOT_EXIST","message":"x"}')
        return httpx.Response(404, content=b'{"code":"ORDER_NOT_EXIST"}', headers=real.headers)

    with pytest.raises(WeChatUnavailable):
        await wechat([forged, forged]).query(PREPAY["out_trade_no"])


async def test_an_oversized_error_is_still_a_refusal(wechat: Any) -> None:
    def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, content=b"x" * (128 * 1024))

    with pytest.raises(WeChatRejected):
        await wechat([huge]).query(PREPAY["out_trade_no"])


async def test_ids_that_would_change_the_url_are_refused_before_sending(wechat: Any) -> None:
    client = wechat([])

    with pytest.raises(ValueError, match="not an id"):
        await client.refund_query("R1?x=1")
    with pytest.raises(ValueError, match="not an id"):
        await client.query("../../v3/certificates")


async def test_each_attempt_is_signed_afresh(wechat: Any) -> None:
    authorizations: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        authorizations.append(request.headers["Authorization"])
        return httpx.Response(503)

    def ok(request: httpx.Request) -> httpx.Response:
        authorizations.append(request.headers["Authorization"])
        return signed(200, b'{"prepay_id":"wx1"}')

    await wechat([busy, ok]).jsapi_prepay(**PREPAY)

    assert len(set(authorizations)) == 2  # a new nonce and signature each time

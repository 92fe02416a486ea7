"""v3 signing, verification and resource decryption against PROTOCOL.md §8 and §10 H-L."""

from __future__ import annotations

import base64
import json

import pytest

from app.wechat.v3 import (
    AUTH_SCHEME,
    MerchantSigner,
    ResourceUnreadable,
    SignatureRejected,
    decrypt_resource,
    load_private_key,
    load_public_key,
    request_message,
    rsa_sign,
    verify_wechat_signature,
)
from tests.wechat.vectors_v3 import (
    H_BODY,
    H_GET_CERTIFICATES_SIGNATURE,
    H_MCHID,
    H_NONCE,
    H_SERIAL,
    H_SIGNATURE,
    H_TIMESTAMP,
    L5_API_V3_KEY,
    L5_BODY,
    L5_NONCE,
    L5_PLAINTEXT,
    L5_SIGNATURE,
    L5_TIMESTAMP,
    L6_SIGNATURE,
    TEST_PRIVATE_KEY,
    TEST_PUBLIC_KEY,
)

SIGNER = MerchantSigner(H_MCHID, H_SERIAL, load_private_key(TEST_PRIVATE_KEY))
WECHAT_KEY = load_public_key(TEST_PUBLIC_KEY)
L5_NOW = int(L5_TIMESTAMP) + 10


def test_request_signature_matches_the_official_vector() -> None:
    # §10 H: POST /v3/pay/transactions/jsapi with the official body, key, time and nonce.
    header = SIGNER.authorization(
        "POST", "/v3/pay/transactions/jsapi", H_BODY, timestamp=H_TIMESTAMP, nonce=H_NONCE
    )

    scheme, _, params = header.partition(" ")
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert scheme == AUTH_SCHEME
    assert {k: v.strip('"') for k, v in fields.items()} == {
        "mchid": H_MCHID,
        "nonce_str": H_NONCE,
        "timestamp": H_TIMESTAMP,
        "serial_no": H_SERIAL,
        "signature": H_SIGNATURE,
    }


def test_a_get_signs_an_empty_body_line() -> None:
    # §8.2: the body line is empty for GET, so the message ends "\n\n" (§10 H, second vector).
    message = request_message("GET", "/v3/certificates", H_TIMESTAMP, H_NONCE, b"")

    assert message.endswith(f"{H_NONCE}\n\n")
    assert rsa_sign(message, SIGNER.key) == H_GET_CERTIFICATES_SIGNATURE


def test_v3_pay_params_match_the_vector_and_leave_sign_type_unsigned() -> None:
    # §10 L6; §8.4: signType is "RSA" and not part of the signed message.
    params = SIGNER.pay_params(
        "wx1234567890abcdef",
        "wx20231115061320123456789abcdef0000",
        timestamp="1700000000",
        nonce="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
    )

    assert params == {
        "timeStamp": "1700000000",
        "nonceStr": "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
        "package": "prepay_id=wx20231115061320123456789abcdef0000",
        "signType": "RSA",
        "paySign": L6_SIGNATURE,
    }


def test_wechats_notify_signature_verifies_over_the_raw_body() -> None:
    # §10 L5, with "now" ten seconds after the notify's timestamp.
    verify_wechat_signature(
        timestamp=L5_TIMESTAMP,
        nonce=L5_NONCE,
        body=L5_BODY,
        signature=L5_SIGNATURE,
        key=WECHAT_KEY,
        now=L5_NOW,
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": L5_BODY.replace(b'"id":"EV-', b'"id":"XV-')}, "does not verify"),
        ({"body": L5_BODY + b" "}, "does not verify"),
        ({"nonce": "0" * 32}, "does not verify"),
        ({"signature": "not base64!"}, "does not verify"),
        ({"signature": "WECHATPAY/SIGNTEST/" + L5_SIGNATURE}, "probe"),
        ({"signature": ""}, "missing"),
        ({"now": int(L5_TIMESTAMP) + 300}, "five minutes"),
        ({"now": int(L5_TIMESTAMP) - 300}, "five minutes"),
        ({"timestamp": "17000289.1"}, "five minutes"),
        ({"timestamp": "²"}, "five minutes"),  # a digit to str.isdigit(), not to int()
        ({"timestamp": "1" * 5000}, "five minutes"),
        ({"signature": "签名" + L5_SIGNATURE}, "does not verify"),
    ],
    ids=[
        "body-changed", "body-extended", "nonce", "not-base64", "probe", "missing", "late",
        "early", "not-a-number", "superscript-digit", "huge-number", "non-ascii-signature",
    ],
)  # fmt: skip
def test_anything_but_wechats_exact_signature_is_refused(
    change: dict[str, object], reason: str
) -> None:
    given: dict[str, object] = {
        "timestamp": L5_TIMESTAMP,
        "nonce": L5_NONCE,
        "body": L5_BODY,
        "signature": L5_SIGNATURE,
        "key": WECHAT_KEY,
        "now": L5_NOW,
    }
    with pytest.raises(SignatureRejected, match=reason):
        verify_wechat_signature(**(given | change))  # type: ignore[arg-type]


def test_notify_resource_decrypts_with_the_apiv3_key() -> None:
    # §10 L5: AEAD_AES_256_GCM, nonce and associated data from the resource itself.
    resource = json.loads(L5_BODY)["resource"]

    plaintext = decrypt_resource(
        L5_API_V3_KEY,
        nonce=resource["nonce"],
        associated_data=resource["associated_data"],
        ciphertext=resource["ciphertext"],
    )

    assert plaintext.decode() == L5_PLAINTEXT
    assert json.loads(plaintext)["amount"]["total"] == 1


def test_aes_gcm_matches_wechatpay_javas_vector() -> None:
    # §10 I (wechatpay-java AeadAesCipherTest).
    plaintext = decrypt_resource(
        "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb",
        nonce="uluk4a9R25RW",
        associated_data="associatedData",
        ciphertext="ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=",
    )

    assert plaintext == b"message"


def test_a_key_that_is_not_32_bytes_is_refused() -> None:
    # §10 J: wechatpay-go's 16-byte test key would mean AES-128; the APIv3 key is 32 bytes.
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt_resource(
            "testAPIv3Key0000",
            nonce="wCq51qZv4Yfg",
            associated_data="Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            ciphertext="FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        )


@pytest.mark.parametrize(
    "change",
    [
        {"associated_data": "certificate"},
        {"nonce": "000000000000"},
        {"ciphertext": "not base64!"},
        {"api_v3_key": "X" * 32},
    ],
)
def test_a_tampered_or_foreign_resource_does_not_decrypt(change: dict[str, str]) -> None:
    resource = json.loads(L5_BODY)["resource"]
    given = {
        "api_v3_key": L5_API_V3_KEY,
        "nonce": resource["nonce"],
        "associated_data": resource["associated_data"],
        "ciphertext": resource["ciphertext"],
    } | change
    key = given.pop("api_v3_key")

    with pytest.raises(ResourceUnreadable):
        decrypt_resource(key, **given)


def test_a_flipped_ciphertext_bit_is_caught_by_the_tag() -> None:
    resource = json.loads(L5_BODY)["resource"]
    raw = bytearray(base64.b64decode(resource["ciphertext"]))
    raw[0] ^= 1

    with pytest.raises(ResourceUnreadable):
        decrypt_resource(
            L5_API_V3_KEY,
            nonce=resource["nonce"],
            associated_data=resource["associated_data"],
            ciphertext=base64.b64encode(bytes(raw)).decode(),
        )

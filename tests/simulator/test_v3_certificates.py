"""Certificate mode (PROTOCOL.md §8.6): WeChat Pay signs with a platform certificate named by its
serial, serves the certificates at ``GET /v3/certificates`` encrypted with the APIv3 key, and
rotates to the next certificate on the control API's switch."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from app.wechat.v3 import decrypt_resource, verify_wechat_signature
from tests.simulator.v3helpers import V3Simulator, signed_headers


async def _certificates(simulator: V3Simulator, http: httpx.AsyncClient) -> httpx.Response:
    headers = signed_headers(simulator.signer(), "GET", "/v3/certificates", b"")
    return await http.get(simulator.handle.url("/v3/certificates"), headers=headers)


def _verified_by(answer: httpx.Response, certificate_pem: bytes) -> bool:
    key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        verify_wechat_signature(
            timestamp=answer.headers["Wechatpay-Timestamp"],
            nonce=answer.headers["Wechatpay-Nonce"],
            body=answer.content,
            signature=answer.headers["Wechatpay-Signature"],
            key=key,
            now=int(time.time()),
        )
    except ValueError:
        return False
    return True


def _decrypted(simulator: V3Simulator, entry: dict[str, Any]) -> bytes:
    sealed = entry["encrypt_certificate"]
    assert sealed["algorithm"] == "AEAD_AES_256_GCM"
    return decrypt_resource(
        simulator.api_v3_key,
        nonce=sealed["nonce"],
        associated_data=sealed["associated_data"],
        ciphertext=sealed["ciphertext"],
    )


async def test_certificates_are_served_encrypted_and_the_answer_is_signed_by_one(
    v3_certificate_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    first = v3_certificate_simulator.material.config.signing_keys[0]
    assert first.certificate_pem is not None

    answer = await _certificates(v3_certificate_simulator, http)
    [entry] = answer.json()["data"]
    certificate = x509.load_pem_x509_certificate(_decrypted(v3_certificate_simulator, entry))

    assert answer.status_code == 200
    assert entry["serial_no"] == first.serial == answer.headers["Wechatpay-Serial"]
    assert format(certificate.serial_number, "X") == entry["serial_no"]  # how SDKs match it
    assert entry["effective_time"].endswith("+08:00") and entry["expire_time"]
    assert _verified_by(answer, first.certificate_pem)


async def test_rotation_signs_with_the_next_certificate_and_lists_both(
    v3_certificate_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    old, new = v3_certificate_simulator.material.config.signing_keys
    assert old.certificate_pem is not None and new.certificate_pem is not None
    client_of_old = v3_certificate_simulator.client(http, key=old)
    client_of_new = v3_certificate_simulator.client(http, key=new)
    prepay_id = await v3_certificate_simulator.place_order(client_of_old, "V3ROTATE001")

    rotated = await v3_certificate_simulator.handle.rotate_certificate()
    answer = await _certificates(v3_certificate_simulator, http)
    await client_of_old.query("V3ROTATE001")  # a new serial: the certificates fetched (§8.3)
    queried = await client_of_new.query("V3ROTATE001")
    await v3_certificate_simulator.handle.pay(prepay_id)
    [attempt, *_] = await v3_certificate_simulator.handle.wait_for_notifies(1)

    assert rotated["wechatpay_serial"] == new.serial
    assert [e["serial_no"] for e in answer.json()["data"]] == [old.serial, new.serial]
    assert _verified_by(answer, new.certificate_pem)
    assert not _verified_by(answer, old.certificate_pem)
    assert queried.trade_state == "NOTPAY"
    assert attempt["headers"]["Wechatpay-Serial"] == new.serial
    assert new.serial in client_of_old.trust.serials()
    await client_of_new.parse_payment_notify(attempt["headers"], attempt["body"].encode())


async def test_rotation_past_the_last_certificate_is_refused(
    v3_certificate_simulator: V3Simulator,
) -> None:
    await v3_certificate_simulator.handle.rotate_certificate()

    with pytest.raises(httpx.HTTPStatusError) as refused:
        await v3_certificate_simulator.handle.rotate_certificate()

    assert refused.value.response.status_code == 409


async def test_public_key_mode_has_no_certificates_and_no_rotation(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    answer = await _certificates(v3_simulator, http)
    with pytest.raises(httpx.HTTPStatusError) as rotation:
        await v3_simulator.handle.rotate_certificate()
    keys = await v3_simulator.handle.v3_keys()

    assert (answer.status_code, json.loads(answer.content)["code"]) == (404, "RESOURCE_NOT_EXISTS")
    assert rotation.value.response.status_code == 409
    assert keys["mode"] == "public_key"
    assert keys["wechatpay_serial"].startswith("PUB_KEY_ID_")
    assert keys["wechatpay_public_key_pem"].encode() == (
        v3_simulator.material.wechatpay_public_key_pem
    )

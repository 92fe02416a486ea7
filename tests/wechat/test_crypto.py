"""Refund notify ``req_info`` (PROTOCOL.md §6.5) against the §10 G and L4 vectors."""

from __future__ import annotations

import base64

import pytest

from app.wechat.crypto import (
    ReqInfoInvalid,
    decrypt_req_info,
    encrypt_req_info,
    refund_notify_key,
)
from app.wechat.xmlcodec import from_xml
from tests.wechat.conftest import API_KEY
from tests.wechat.vectors_refund import G_API_KEY, G_REQ_INFO, L4_PLAINTEXT, L4_REQ_INFO


def test_the_aes_key_is_the_lowercase_md5_hex_of_the_api_key() -> None:
    assert refund_notify_key(API_KEY) == b"aa4bc671b4c1c7a38e29800f50ef6346"
    assert refund_notify_key(G_API_KEY) == b"63dfc0c1f53d9bc83a8fdc365b8141da"


def test_vector_l4_decrypts_byte_for_byte() -> None:
    assert decrypt_req_info(L4_REQ_INFO, API_KEY) == L4_PLAINTEXT


def test_vector_l4_encrypts_byte_for_byte() -> None:
    # ECB with PKCS#7 is deterministic, so the simulator reproduces WeChat's bytes exactly.
    assert encrypt_req_info(L4_PLAINTEXT, API_KEY) == L4_REQ_INFO


def test_vector_g_from_wechatpy_decrypts() -> None:
    fields = from_xml(decrypt_req_info(G_REQ_INFO, G_API_KEY), root="root")
    assert fields["out_refund_no"] == "1234"
    assert fields["out_trade_no"] == "2020010418301551404339261814"
    assert fields["transaction_id"] == "4200000483202001042069747825"
    assert fields["refund_id"] == "50300103182020010413419046597"
    assert fields["refund_recv_accout"] == "招商银行信用卡8915"
    assert fields["success_time"] == "2020-01-04 18:34:24"


def test_req_info_under_another_key_is_refused() -> None:
    # A forged or misaddressed notify: it must not decrypt into anything we would act on.
    with pytest.raises(ReqInfoInvalid):
        decrypt_req_info(L4_REQ_INFO, G_API_KEY)


@pytest.mark.parametrize(
    "req_info",
    [
        "not base64 at all!",
        base64.b64encode(b"fifteen bytes..").decode(),  # not whole AES blocks
        "",
    ],
)
def test_malformed_req_info_is_refused(req_info: str) -> None:
    with pytest.raises(ReqInfoInvalid):
        decrypt_req_info(req_info, API_KEY)


@pytest.mark.parametrize("plaintext", [b"", b"x" * 15, b"y" * 16, "<root>示例</root>".encode()])
def test_encrypt_then_decrypt_round_trips(plaintext: bytes) -> None:
    assert decrypt_req_info(encrypt_req_info(plaintext, API_KEY), API_KEY) == plaintext

"""The v3 notify routes under attack (PROTOCOL.md §8.3, §8.5, §8.7): every message that is not
WeChat's, fresh, readable and about our order is answered non-2xx, and nothing is recorded.

The messages are built with the simulator's own v3 code (the same signing and encryption it
uses for its notifies), then spoiled one way each.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.simulator.v3envelope import WeChatPayKeys, encode_json
from app.simulator.v3keys import DevMaterial, generate_dev_material
from app.simulator.v3messages import encrypt_resource, signed_notify
from app.wechat.timefmt import to_rfc3339
from app.wechat.v3 import load_private_key, rsa_sign
from app.wechat.xmlcodec import DEFAULT_MAX_BYTES
from tests.conftest import ClientFactory
from tests.helpers import add_product, create_order, login, scalar
from tests.payments.test_v3_flow import on_v3, v3_simulator
from tests.plugins.simulator import SimulatorHandle

__all__ = ["v3_simulator"]  # a fixture shared with the v3 flow tests

NOTIFY = "/wechat/pay/v3/notify"
REFUND_NOTIFY = "/wechat/pay/v3/refund-notify"


@dataclass(frozen=True)
class Scene:
    client: httpx.AsyncClient
    material: DevMaterial
    settings: Settings
    order: dict[str, Any]

    def transaction(self, **changes: Any) -> dict[str, Any]:
        """The transaction WeChat would report for our order, paid (§8.5)."""
        paid = {
            "appid": self.settings.appid, "mchid": self.settings.mch_id,
            "out_trade_no": self.order["out_trade_no"],
            "transaction_id": "4200000000202611290000000001", "trade_type": "JSAPI",
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
            "success_time": to_rfc3339(dt.datetime.now(dt.UTC)),
            "payer": {"openid": "o"},
            "amount": {"total": self.order["total_fee"], "payer_total": self.order["total_fee"],
                       "currency": "CNY", "payer_currency": "CNY"},
        }  # fmt: skip
        return {k: v for k, v in {**paid, **changes}.items() if v is not None}

    def genuine(self, **changes: Any) -> tuple[dict[str, str], bytes]:
        return signed_notify(
            self.material.config, self.settings.mch_id, self.transaction(**changes)
        )

    def signed(self, body: bytes, material: DevMaterial | None = None) -> dict[str, str]:
        """Correct signature headers over ``body``, by WeChat Pay's key (or ``material``'s)."""
        keys = WeChatPayKeys((material or self.material).config, self.settings.mch_id)
        return {"Content-Type": "application/json", **keys.signature_headers(body)}


@pytest.fixture
async def scene(
    make_client: ClientFactory,
    v3_simulator: SimulatorHandle,
    v3_material: DevMaterial,
    settings: Settings,
    tmp_path: Path,
) -> AsyncIterator[Scene]:
    client = await make_client(**on_v3(v3_material, tmp_path, v3_simulator.base_url))
    auth = await login(client, v3_simulator)
    order = await create_order(client, auth, await add_product(client))
    yield Scene(client, v3_material, settings, order)


def envelope(body: bytes, **changes: Any) -> bytes:
    data = json.loads(body)
    data.update(changes)
    return encode_json(data)


def resource_of(body: bytes, **changes: Any) -> bytes:
    data = json.loads(body)
    data["resource"] = {**data["resource"], **changes}
    return encode_json(data)


def reencrypted(scene: Scene, body: bytes, *, key: str | None = None, aad: str = "transaction",
                plaintext: bytes | None = None) -> bytes:  # fmt: skip
    data = json.loads(body)
    content = plaintext if plaintext is not None else encode_json(scene.transaction())
    data["resource"] = encrypt_resource(
        content, key or scene.material.config.api_v3_key, associated_data=aad,
        original_type="transaction",
    )  # fmt: skip
    return encode_json(data)


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


Attack = Callable[[Scene], tuple[dict[str, str], bytes]]


def without(header: str) -> Attack:
    def attack(scene: Scene) -> tuple[dict[str, str], bytes]:
        headers, body = scene.genuine()
        return {k: v for k, v in headers.items() if k != header}, body

    return attack


def with_header(header: str, value: Callable[[str], str]) -> Attack:
    def attack(scene: Scene) -> tuple[dict[str, str], bytes]:
        headers, body = scene.genuine()
        return {**headers, header: value(headers[header])}, body

    return attack


def resigned(change: Callable[[Scene, bytes], bytes]) -> Attack:
    """Changed after signing, then signed again properly: only the content can refuse it."""

    def attack(scene: Scene) -> tuple[dict[str, str], bytes]:
        body = change(scene, scene.genuine()[1])
        return scene.signed(body), body

    return attack


def signed_at(offset: int) -> Attack:
    """WeChat's genuine signature, made ``offset`` seconds from now: a real notify replayed
    after its five-minute window (or dated ahead), so only the window can refuse it (§8.3)."""

    def attack(scene: Scene) -> tuple[dict[str, str], bytes]:
        _, body = scene.genuine()
        wechat = load_private_key(scene.material.config.signing_keys[0].private_key_pem)
        timestamp, nonce = str(int(time.time()) + offset), "r" * 32
        signature = rsa_sign(f"{timestamp}\n{nonce}\n{body.decode()}\n", wechat)
        headers = {**scene.signed(body), "Wechatpay-Timestamp": timestamp}
        return {**headers, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": signature}, body

    return attack


def transaction(**changes: Any) -> Attack:
    return lambda scene: scene.genuine(**changes)


def tampered_ciphertext(scene: Scene, body: bytes) -> bytes:
    ciphertext = json.loads(body)["resource"]["ciphertext"]
    return resource_of(body, ciphertext=flip(ciphertext, 5))


def tampered_tag(scene: Scene, body: bytes) -> bytes:
    sealed = base64.b64decode(json.loads(body)["resource"]["ciphertext"])
    spoiled = sealed[:-1] + bytes([sealed[-1] ^ 1])
    return resource_of(body, ciphertext=base64.b64encode(spoiled).decode())


ATTACKS: dict[str, Attack] = {
    # Signature and freshness (§8.3).
    "tampered body": lambda s: (s.genuine()[0], envelope(s.genuine()[1], summary="已支付")),
    "forged signature": with_header("Wechatpay-Signature", lambda v: flip(v, 3)),
    "SIGNTEST probe": with_header("Wechatpay-Signature", lambda v: "WECHATPAY/SIGNTEST/" + v),
    "stale timestamp": with_header("Wechatpay-Timestamp", lambda v: str(int(v) - 600)),
    "timestamp in the future": with_header("Wechatpay-Timestamp", lambda v: str(int(v) + 600)),
    "genuine, replayed after its window": signed_at(-301),
    "genuine, dated 6 minutes ahead": signed_at(+360),
    "unknown serial": with_header("Wechatpay-Serial", lambda v: "PUB_KEY_ID_" + "9" * 32),
    "no signature": without("Wechatpay-Signature"),
    "no timestamp": without("Wechatpay-Timestamp"),
    "no nonce": without("Wechatpay-Nonce"),
    "no serial": without("Wechatpay-Serial"),
    "signed by another key": lambda s: (
        s.signed(s.genuine()[1], generate_dev_material(s.settings.mch_id)), s.genuine()[1]
    ),
    # The resource (§8.5).
    "wrong APIv3 key": resigned(lambda s, b: reencrypted(s, b, key="K" * 32)),
    "tampered ciphertext": resigned(tampered_ciphertext),
    "tampered tag": resigned(tampered_tag),
    "wrong associated data": resigned(lambda s, b: resource_of(b, associated_data="refund")),
    "wrong resource_type": resigned(lambda s, b: envelope(b, resource_type="plain-resource")),
    "wrong algorithm": resigned(lambda s, b: resource_of(b, algorithm="AEAD_AES_128_GCM")),
    "resource is not JSON": resigned(lambda s, b: reencrypted(s, b, plaintext=b"<xml/>")),
    # About someone else, or not a payment.
    "another appid": transaction(appid="wx0000000000000000"),
    "another mchid": transaction(mchid="1000000001"),
    "not paid": transaction(trade_state="NOTPAY", transaction_id=None),
    "no amount": transaction(amount=None),
    "no transaction id": transaction(transaction_id=None),
    "refund event on the payment URL": resigned(
        lambda s, b: envelope(b, event_type="REFUND.SUCCESS")
    ),
    # The message itself.
    "not JSON": lambda s: (s.signed(b"<xml><a>1</a></xml>"), b"<xml><a>1</a></xml>"),
    "empty body": lambda s: (s.signed(b""), b""),
    "oversized body": lambda s: (
        s.signed(b"{" + b" " * DEFAULT_MAX_BYTES + b"}"), b"{" + b" " * DEFAULT_MAX_BYTES + b"}"
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_hostile_payment_notify_is_refused_and_changes_nothing(
    scene: Scene, engine: AsyncEngine, name: str
) -> None:
    headers, body = ATTACKS[name](scene)

    response = await scene.client.post(NOTIFY, content=body, headers=headers)

    assert response.status_code >= 400, response.text
    assert response.json()["code"] == "FAIL"
    assert await scalar(engine, "SELECT status FROM orders") == "NOTPAY"
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 0


async def test_a_repeated_signature_header_is_refused(scene: Scene, engine: AsyncEngine) -> None:
    headers, body = scene.genuine()
    forged = with_header("Wechatpay-Signature", lambda v: flip(v, 3))(scene)[0]
    repeated = [*headers.items(), ("Wechatpay-Signature", forged["Wechatpay-Signature"])]

    response = await scene.client.post(NOTIFY, content=body, headers=repeated)

    assert response.status_code >= 400
    assert await scalar(engine, "SELECT status FROM orders") == "NOTPAY"


async def test_a_genuine_notify_pays_once_and_its_replay_is_a_duplicate(
    scene: Scene, engine: AsyncEngine
) -> None:
    headers, body = scene.genuine()

    first = await scene.client.post(NOTIFY, content=body, headers=headers)
    replay = await scene.client.post(NOTIFY, content=body, headers=headers)  # within the window

    assert (first.status_code, replay.status_code) == (204, 204)
    assert await scalar(engine, "SELECT status FROM orders") == "SUCCESS"
    assert await scalar(engine, "SELECT count(*) FROM order_events") == 1
    verdicts = await scalar(
        engine, "SELECT count(*) FROM payment_notifies WHERE verdict = 'DUPLICATE'"
    )
    assert verdicts == 1


async def test_a_signed_notify_with_another_amount_is_flagged_as_on_v2(
    scene: Scene, engine: AsyncEngine
) -> None:
    amount = {"total": 1, "payer_total": 1, "currency": "CNY", "payer_currency": "CNY"}
    headers, body = scene.genuine(amount=amount)

    response = await scene.client.post(NOTIFY, content=body, headers=headers)

    assert response.status_code >= 400  # not acknowledged: a person must look
    assert await scalar(engine, "SELECT status FROM orders") == "NOTPAY"
    assert await scalar(engine, "SELECT review_reason FROM orders") == "AMOUNT_MISMATCH"


async def test_a_hostile_refund_notify_is_refused(scene: Scene, engine: AsyncEngine) -> None:
    refund = {
        "mchid": "1000000001", "out_trade_no": scene.order["out_trade_no"],
        "transaction_id": "4200000000202611290000000001", "out_refund_no": "R1",
        "refund_id": "50300000000000000000000001", "refund_status": "SUCCESS",
        "amount": {"total": 990, "refund": 990, "payer_total": 990, "payer_refund": 990},
    }  # fmt: skip
    foreign = signed_notify(scene.material.config, scene.settings.mch_id, refund,
                            event_type="REFUND.SUCCESS")  # fmt: skip
    headers, body = signed_notify(scene.material.config, scene.settings.mch_id,
                                  {**refund, "mchid": scene.settings.mch_id},
                                  event_type="REFUND.SUCCESS")  # fmt: skip
    forged = {**headers, "Wechatpay-Signature": flip(headers["Wechatpay-Signature"], 3)}

    for attempt_headers, attempt_body in (foreign, (forged, body)):
        response = await scene.client.post(
            REFUND_NOTIFY, content=attempt_body, headers=attempt_headers
        )
        assert response.status_code >= 400
    assert await scalar(engine, "SELECT count(*) FROM refunds") == 0
    assert await scalar(engine, "SELECT refunded_fee FROM orders") == 0


def test_the_corpus_has_at_least_25_cases() -> None:
    assert len(ATTACKS) >= 25  # besides the repeated header and the refund notifies below


@pytest.mark.parametrize("path", [NOTIFY, REFUND_NOTIFY])
async def test_a_v3_notify_to_a_service_without_v3_is_not_found(
    client: httpx.AsyncClient, path: str
) -> None:
    # Not a server error (WeChat would retry it for a day): there is no such notify URL here.
    response = await client.post(path, content=b"{}", headers={"Content-Type": "application/json"})

    assert response.status_code == 404
    assert response.json() == {"code": "FAIL", "message": "WeChat Pay v3 is not configured"}

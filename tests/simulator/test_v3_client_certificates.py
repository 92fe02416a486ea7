"""Our v3 client in platform-certificate mode (PROTOCOL.md §8.3, §8.6), against the simulator's
certificate mode over real HTTP: the certificates downloaded, decrypted and checked; refreshed
once on a new serial, so a rotation goes through; both certificates accepted during the overlap;
WeChat's public key and its certificates accepted side by side during a migration."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.simulator.v3keys import generate_dev_material
from app.wechat.errors import InvalidNotification, RefusalKind, WeChatUnavailable
from app.wechat.v3 import load_private_key, load_public_key, rsa_sign
from app.wechat.v3client import WeChatPayV3Client
from app.wechat.v3trust import WeChatPayTrust
from tests.hermetic import hermetic_settings
from tests.simulator.v3helpers import V3Simulator


class Downloads:
    """Counts our client's ``GET /v3/certificates`` on the wire."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.count += request.url.path == "/v3/certificates"


@pytest.fixture
async def downloads() -> Downloads:
    return Downloads()


@pytest.fixture
async def wire(downloads: Downloads) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        trust_env=False, timeout=5, event_hooks={"request": [downloads]}
    ) as client:
        yield client


async def _paid_notify(
    simulator: V3Simulator, client: WeChatPayV3Client, no: str
) -> tuple[dict[str, str], bytes]:
    """The headers and body of WeChat's first notify that order ``no`` was paid."""
    await simulator.handle.pay(await simulator.place_order(client, no))
    for _ in range(250):
        for attempt in await simulator.handle.notifies():
            if simulator.decrypt(attempt["body"])["out_trade_no"] == no:
                return dict(attempt["headers"]), attempt["body"].encode()
        await asyncio.sleep(0.02)
    raise AssertionError(f"WeChat sent no notify for {no}")


async def test_certificates_are_downloaded_once_and_answers_verify_with_them(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient, downloads: Downloads
) -> None:
    client = v3_certificate_simulator.client(wire, trust=WeChatPayTrust())
    first = v3_certificate_simulator.material.config.signing_keys[0]

    await v3_certificate_simulator.place_order(client, "V3CERT0001")
    queried = await client.query("V3CERT0001")

    assert queried.trade_state == "NOTPAY"
    assert downloads.count == 1  # the first answer named a new serial; the second did not
    assert client.trust.serials() == [first.serial]
    assert client.trust.request_serial == first.serial


async def test_a_rotation_is_followed_and_both_certificates_verify_during_the_overlap(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient, downloads: Downloads
) -> None:
    client = v3_certificate_simulator.client(wire, trust=WeChatPayTrust(refresh_interval=0))
    old, new = v3_certificate_simulator.material.config.signing_keys
    before = await _paid_notify(v3_certificate_simulator, client, "V3CERT0002")

    await v3_certificate_simulator.handle.rotate_certificate()
    after = await _paid_notify(v3_certificate_simulator, client, "V3CERT0003")

    assert (
        before[0]["Wechatpay-Serial"] == old.serial and after[0]["Wechatpay-Serial"] == new.serial
    )
    for headers, body in (after, before):  # the old one still verifies after the rotation
        assert (await client.parse_payment_notify(headers, body)).trade_state == "SUCCESS"
    assert sorted(client.trust.serials()) == sorted([old.serial, new.serial])
    assert downloads.count == 2  # the first order, then the rotated serial


async def test_made_up_serials_are_refused_and_download_at_most_twice_a_minute(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient, downloads: Downloads
) -> None:
    client = v3_certificate_simulator.client(wire, trust=WeChatPayTrust())
    headers, body = await _paid_notify(v3_certificate_simulator, client, "V3CERT0004")
    after_order = downloads.count

    for _ in range(20):  # anyone can post these: they must not become calls to WeChat
        forged = {**headers, "Wechatpay-Serial": secrets.token_hex(20).upper()}
        with pytest.raises(InvalidNotification) as refused:
            await client.parse_payment_notify(forged, body)
        assert refused.value.kind is RefusalKind.SIGNATURE

    assert after_order == 1 and downloads.count == 2  # one more, then no more this minute


async def test_the_download_limit_is_per_minute(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient, downloads: Downloads
) -> None:
    now = [time.time()]
    client = v3_certificate_simulator.client(wire, trust=WeChatPayTrust(clock=lambda: now[0]))
    headers, body = await _paid_notify(v3_certificate_simulator, client, "V3CERT0005")
    forged = {**headers, "Wechatpay-Serial": "0123456789ABCDEF"}
    counts = []

    for _ in range(2):
        for _ in range(3):
            with pytest.raises(InvalidNotification):
                await client.parse_payment_notify(forged, body)
        counts.append(downloads.count)
        now[0] += 61

    assert counts == [2, 4]


async def test_certificates_that_do_not_decrypt_with_our_key_are_not_trusted(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient
) -> None:
    wrong_key = "W" * 32
    client = v3_certificate_simulator.client(wire, trust=WeChatPayTrust(), api_v3_key=wrong_key)

    # WeChat accepted the order, but its answer cannot be trusted: the outcome is unknown,
    # never a refusal that would let the order be abandoned.
    with pytest.raises(WeChatUnavailable):
        await v3_certificate_simulator.place_order(client, "V3CERT0006")

    assert client.trust.serials() == []


async def test_during_a_migration_the_public_key_and_the_certificates_both_verify(
    v3_certificate_simulator: V3Simulator, wire: httpx.AsyncClient
) -> None:
    """WeChat's migration guide: callbacks move from certificates to the public key over days,
    so both are accepted, each chosen by ``Wechatpay-Serial`` (§8.6)."""
    public = generate_dev_material(hermetic_settings().mch_id)  # WeChat's new public key
    public_key = load_public_key(public.wechatpay_public_key_pem)
    trust = WeChatPayTrust((public.wechatpay_public_key_id, public_key))
    client = v3_certificate_simulator.client(wire, trust=trust)
    headers, body = await _paid_notify(v3_certificate_simulator, client, "V3CERT0007")
    signer = load_private_key(public.config.signing_keys[0].private_key_pem)
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    by_public_key = {
        **headers,
        "Wechatpay-Serial": public.wechatpay_public_key_id,
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": rsa_sign(f"{timestamp}\n{nonce}\n{body.decode()}\n", signer),
    }

    by_certificate = await client.parse_payment_notify(headers, body)
    by_key = await client.parse_payment_notify(by_public_key, body)

    assert by_certificate.out_trade_no == by_key.out_trade_no == "V3CERT0007"
    assert client.trust.request_serial == public.wechatpay_public_key_id

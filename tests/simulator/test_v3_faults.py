"""The fault switches on v3 (``app.simulator.faults``): each does what it says, seen through our
own v3 client, which must refuse what WeChat's rules say to refuse (PROTOCOL.md §8.3, §8.5)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from app.wechat.errors import InvalidNotification, RefusalKind, WeChatRejected, WeChatUnavailable
from app.wechat.v3 import load_public_key, verify_wechat_signature
from tests.simulator.v3helpers import V3Simulator


async def _paid(simulator: V3Simulator, http: httpx.AsyncClient, out_trade_no: str) -> None:
    prepay_id = await simulator.place_order(simulator.client(http), out_trade_no, total=500)
    await simulator.handle.pay(prepay_id)


async def _first_attempts(simulator: V3Simulator, count: int = 1) -> list[dict[str, Any]]:
    attempts = await simulator.handle.wait_for_notifies(count)
    return [a for a in attempts if a["attempt"] <= 1][:count]


async def test_duplicate_notify_sends_identical_copies_that_each_verify(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("duplicate_notify", copies=2, concurrent=True)
    await _paid(v3_simulator, http, "V3DUPLICATE")
    copies = await _first_attempts(v3_simulator, 3)
    client = v3_simulator.client(http)

    assert sorted(a["copy"] for a in copies) == [0, 1, 2]
    assert len({a["body"] for a in copies}) == 1
    for attempt in copies:
        await client.parse_payment_notify(attempt["headers"], attempt["body"].encode())


async def test_delay_notify_holds_the_first_attempt_back(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("delay_notify", delay_ms=300)
    started = time.monotonic()
    await _paid(v3_simulator, http, "V3DELAYED01")
    await _first_attempts(v3_simulator)

    assert time.monotonic() - started >= 0.3


async def test_tamper_amount_is_correctly_signed_but_carries_another_amount(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("tamper_amount", delta=-499)
    await _paid(v3_simulator, http, "V3TAMPERED1")
    [attempt] = await _first_attempts(v3_simulator)

    transaction = await v3_simulator.client(http).parse_payment_notify(
        attempt["headers"], attempt["body"].encode()
    )

    assert transaction.amount is not None and transaction.amount.total == 1  # order: 500
    assert attempt["faults"] == ["tamper_amount"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("bad_signature", "does not verify"),
        ("stale_timestamp", "five minutes"),
    ],
)
async def test_a_flawed_notify_signature_is_refused_by_the_merchant(
    v3_simulator: V3Simulator, http: httpx.AsyncClient, fault: str, reason: str
) -> None:
    await v3_simulator.handle.set_fault(fault)
    await _paid(v3_simulator, http, "V3FLAWED001")
    [attempt] = await _first_attempts(v3_simulator)

    with pytest.raises(InvalidNotification) as refused:
        await v3_simulator.client(http).parse_payment_notify(
            attempt["headers"], attempt["body"].encode()
        )

    assert refused.value.kind is RefusalKind.SIGNATURE
    assert reason in refused.value.reason
    assert attempt["faults"] == [fault]


async def test_a_stale_notify_is_genuinely_signed_only_too_old(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("stale_timestamp", stale_seconds=900)
    await _paid(v3_simulator, http, "V3STALE0002")
    [attempt] = await _first_attempts(v3_simulator)
    headers = attempt["headers"]

    verify_wechat_signature(  # verifies at the moment it claims to have been made
        timestamp=headers["Wechatpay-Timestamp"],
        nonce=headers["Wechatpay-Nonce"],
        body=attempt["body"].encode(),
        signature=headers["Wechatpay-Signature"],
        key=load_public_key(v3_simulator.material.wechatpay_public_key_pem),
        now=int(headers["Wechatpay-Timestamp"]),
    )
    assert time.time() - int(headers["Wechatpay-Timestamp"]) >= 900


async def test_signtest_probe_comes_once_before_the_genuine_notify(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("signtest_probe")
    await _paid(v3_simulator, http, "V3PROBED001")
    probe, genuine = await _first_attempts(v3_simulator, 2)
    client = v3_simulator.client(http)

    with pytest.raises(InvalidNotification) as refused:
        await client.parse_payment_notify(probe["headers"], probe["body"].encode())
    transaction = await client.parse_payment_notify(genuine["headers"], genuine["body"].encode())

    assert probe["attempt"] == 0 and probe["faults"] == ["signtest_probe"]
    assert probe["headers"]["Wechatpay-Signature"].startswith("WECHATPAY/SIGNTEST/")
    assert "probe" in refused.value.reason
    assert transaction.out_trade_no == "V3PROBED001"
    retried = [a for a in await v3_simulator.handle.notifies() if a["attempt"] == 0]
    assert len(retried) == 1  # a probe is never retried


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("systemerror", {}, (WeChatUnavailable, "SYSTEM_ERROR")),
        ("upstream_5xx", {"status": 502}, (WeChatUnavailable, None)),
        ("malformed_xml", {}, (WeChatUnavailable, None)),
        (
            "business_error",
            {"http_status": 403, "err_code": "NOT_ENOUGH", "err_code_des": "余额不足"},
            (WeChatRejected, "NOT_ENOUGH"),
        ),
    ],
)
async def test_upstream_faults_answer_as_wechat_fails(
    v3_simulator: V3Simulator,
    http: httpx.AsyncClient,
    fault: str,
    options: dict[str, Any],
    expected: tuple[type[Exception], str | None],
) -> None:
    error, code = expected
    await v3_simulator.handle.set_fault(fault, endpoint="v3_jsapi", count=1, **options)
    client = v3_simulator.client(http)

    with pytest.raises(error) as raised:
        await v3_simulator.place_order(client, "V3UPSTREAM1")
    after = await v3_simulator.place_order(client, "V3UPSTREAM2")  # the switch is used up

    assert (getattr(raised.value, "err_code", None) or None) == code
    assert after.startswith("wx")


@pytest.mark.parametrize("fault", ["bad_signature", "stale_timestamp", "signtest_probe"])
async def test_a_signature_fault_naming_an_endpoint_flaws_its_answer(
    v3_simulator: V3Simulator, http: httpx.AsyncClient, fault: str
) -> None:
    client = v3_simulator.client(http)
    await v3_simulator.place_order(client, "V3ANSWER001")
    await v3_simulator.handle.set_fault(fault, endpoint="v3_query", count=1)

    with pytest.raises(WeChatUnavailable) as untrusted:
        await client.query("V3ANSWER001")
    trusted = await client.query("V3ANSWER001")

    assert "untrusted" in str(untrusted.value)
    assert trusted.trade_state == "NOTPAY"


async def test_a_notify_fault_without_endpoint_waits_for_the_notify(
    v3_simulator: V3Simulator, http: httpx.AsyncClient
) -> None:
    await v3_simulator.handle.set_fault("bad_signature", count=1)
    client = v3_simulator.client(http)
    prepay_id = await v3_simulator.place_order(client, "V3WAITING01")
    await client.query("V3WAITING01")  # answered correctly signed
    await v3_simulator.handle.pay(prepay_id)
    [attempt] = await _first_attempts(v3_simulator)

    assert attempt["faults"] == ["bad_signature"]
    assert json.loads(attempt["body"])["event_type"] == "TRANSACTION.SUCCESS"

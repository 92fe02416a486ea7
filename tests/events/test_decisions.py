"""The pure parts of delivery: what an attempt leads to, and the signature scheme."""

from __future__ import annotations

import datetime as dt

import pytest

from app.events.decisions import WebhookBackoff, next_attempt_at
from app.events.signing import sign_webhook, signature_header, verify_webhook
from examples.webhook_receiver import verify_signature

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
POLICY = WebhookBackoff(base_seconds=30, cap_seconds=3600)


@pytest.mark.parametrize(
    ("status", "attempts", "jitter", "after"),
    [
        (200, 1, 0.0, None),
        (204, 7, 0.9, None),
        (299, 1, 0.5, None),
        (301, 1, 0.0, 15.0),  # a redirect is not followed: a failed attempt
        (404, 1, 0.0, 15.0),
        (500, 1, 0.999999, 29.99998),
        (None, 2, 0.0, 30.0),  # no answer: a timeout or a refused connection
        (503, 3, 1.0 - 1e-9, 120.0),
        (503, 8, 0.0, 1800.0),  # 30 * 2**7 = 3840, capped at 3600, halved by jitter floor
        (503, 500, 0.5, 2700.0),  # capped however long it has failed
    ],
)
def test_an_attempt_is_delivered_on_2xx_and_otherwise_backs_off(
    status: int | None, attempts: int, jitter: float, after: float | None
) -> None:
    found = next_attempt_at(status, attempts, NOW, POLICY, jitter)

    if after is None:
        assert found is None
    else:
        assert found is not None
        assert (found - NOW).total_seconds() == pytest.approx(after, abs=1e-3)


def test_the_default_schedule_keeps_retrying_past_three_days_at_most_an_hour_apart() -> None:
    # Nothing gives up on a delivery: the endpoint is disabled instead, after 3 days by default.
    waits = [POLICY.delay(n, 1.0) for n in range(1, 200)]
    assert max(waits) == 3600
    assert sum(waits) > 3 * 86_400


def test_the_signature_is_hmac_sha256_of_t_dot_body_with_one_v1_per_secret() -> None:
    body = b'{"id":"evt_1"}'
    header = signature_header(["whsec_new", "whsec_old"], 1_700_000_000, body)

    t, new, old = header.split(",")
    assert t == "t=1700000000"
    # HMAC-SHA256(key=b"whsec_new", msg=b'1700000000.{"id":"evt_1"}'), computed independently.
    assert new == "v1=" + sign_webhook("whsec_new", 1_700_000_000, body)
    assert old.startswith("v1=") and old != new.replace("v1=", "")
    for secret in ("whsec_new", "whsec_old"):
        assert verify_webhook(header, body, secret, now=1_700_000_100)
        assert verify_signature(header, body, secret, now=1_700_000_100)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"body": b'{"id":"evt_2"}'}, "another body"),
        ({"secret": "whsec_other"}, "another secret"),
        ({"now": 1_700_000_000 + 301}, "too old: a replay"),
        ({"header": "v1=abc"}, "no timestamp"),
    ],
)
def test_a_signature_that_does_not_match_is_refused_by_both_verifiers(
    change: dict[str, object], why: str
) -> None:
    body = b'{"id":"evt_1"}'
    case: dict = {
        "header": signature_header(["whsec_new"], 1_700_000_000, body),
        "body": body,
        "secret": "whsec_new",
        "now": 1_700_000_000,
        **change,
    }
    assert not verify_webhook(case["header"], case["body"], case["secret"], case["now"]), why
    assert not verify_signature(case["header"], case["body"], case["secret"], case["now"]), why

"""Hostile input corpus (PROTOCOL.md §9): every case gets a clear 4xx or a WeChat FAIL, never a
5xx; no order changes state; nothing secret appears in a reply or in the server's log.

The corpus files are v2 and the API: XML on the v2 notify URLs, JSON on the API. They run
against a service on each API version (one that creates v3 orders still serves the v2 notify
URLs, for the orders made before it switched). On v3 the fast suite's v3 hostile notifies
(``tests/payments/test_v3_notify_hostile.py``, §8.3, §8.5, §8.7) run as well, against the same
process and judged the same way, but answered as v3 answers: non-2xx with ``{"code": "FAIL"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.security import SecretBox, derive_key
from app.simulator.messages import refund_notify_body
from app.simulator.v3keys import DevMaterial
from app.simulator.v3messages import signed_notify
from app.wechat.xmlcodec import XmlRejected, from_xml
from tests.helpers import ADMIN
from tests.payments.test_v3_notify_hostile import ATTACKS, REFUND_NOTIFY, Scene, flip
from tests.plugins.cluster import ServiceProcess
from tests.plugins.simulator import SimulatorHandle
from tests.reliability.conftest import StartServices
from tests.reliability.corpus import Case, load_cases, render
from tests.reliability.scenario import (
    V3_NOTIFY_PATH,
    PayVersion,
    add_product,
    login_users,
    pay_at_wechat,
    place_orders,
    record_figures,
)

pytestmark = pytest.mark.reliability

STATE = text(
    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM auth_sessions),"
    " (SELECT count(*) FROM products), (SELECT count(*) FROM order_events),"
    " (SELECT count(*) FROM refunds),"
    " (SELECT string_agg(out_trade_no || ':' || status || ':' || coalesce(transaction_id, '-')"
    "  || ':' || coalesce(paid_at::text, '-') || ':' || refunded_fee, ',' ORDER BY id)"
    "  FROM orders)"
)
LEAK_MARKERS = ("root:x:0:0", "Traceback", "Exception in ASGI")
V3_FAIL = "v3 fail"  # expected of a v3 case: a 4xx with {"code": "FAIL"}


def test_corpus_has_at_least_forty_cases_of_each_required_kind() -> None:
    names = [name for name, _ in load_cases()]
    required = (
        "xxe", "billion_laughs", "ten_megabytes", "gbk", "truncated", "forged_sign",
        "replayed", "wrong_appid", "wrong_mch", "tampered_amount", "sql", "emoji",
        "expired_token", "foreign_token", "garbage_token", "content_type",
    )  # fmt: skip

    assert len(names) >= 40
    assert [kind for kind in required if not any(kind in n for n in names)] == []


async def test_every_hostile_case_is_refused_without_a_trace(
    start_services: StartServices,
    wechat: SimulatorHandle,
    api_version: PayVersion,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    [service] = start_services(count=1)
    values = await _scene(service, wechat, http, engine)
    settings = wechat.settings
    secrets = await _secrets(settings, engine) + [values["TOKEN"], values["OTHER_TOKEN"]]
    secrets += _v3_secrets(api_version.material)
    api_key = settings.api_key.get_secret_value()
    cases = [render(name, spec, values, api_key) for name, spec in load_cases()]
    cases += _v3_cases(api_version, http, values)
    before = await _state(engine)

    failures: list[str] = []
    statuses: dict[int, int] = {}
    for case in cases:
        response = await _send(http, service, case)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        failures += [f"{case.name}: {problem}" for problem in _judge(case, response, secrets)]
        if await _state(engine) != before:
            failures.append(f"{case.name}: the database changed")
            before = await _state(engine)

    log = service.log_text()
    assert failures == [], "\n".join(failures)
    # Refused bodies are kept as a digest and a 256-character excerpt, never in full (issue
    # 15); a control character takes 6 in JSON.
    assert await _largest_refused_row(engine) < 256 * 6 + 200
    assert [s for s in secrets if s in log] == []
    assert [m for m in LEAK_MARKERS if m in log] == []
    record_figures(
        "hostile corpus",
        {
            "api_version": api_version.name,
            "cases": len(cases),
            "v3_cases": sum(c.expect == V3_FAIL for c in cases),
            "statuses": statuses,
            "log_bytes": len(log),
        },
    )


async def _scene(
    service: ServiceProcess,
    simulator: SimulatorHandle,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
) -> dict[str, str]:
    """Two users with an unpaid order each, one paid order, and an expired session."""
    users = await login_users(http, [service], simulator, 3)
    product = await add_product(http, service, price_fen=990)
    mine, paid = await place_orders(http, [service], [users[0]], product, 2)
    [other] = await place_orders(http, [service], [users[1]], product, 1)
    transactions = await pay_at_wechat(http, simulator, [paid])
    await simulator.wait_for_notifies(1, verdict="acknowledged")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE auth_sessions SET expires_at = now() - interval '1 hour'"
                " WHERE id = (SELECT max(id) FROM auth_sessions)"
            )
        )
    token = [u["Authorization"].removeprefix("Bearer ") for u in users]
    settings = simulator.settings
    return {
        "TOKEN": token[0],
        "OTHER_TOKEN": token[1],
        "EXPIRED_TOKEN": token[2],
        "ORDER": mine.out_trade_no,
        "ORDER_FEE": str(mine.total_fee),
        "ORDER_FEE_PLUS_1": str(mine.total_fee + 1),
        "OTHER_ORDER": other.out_trade_no,
        "PAID_ORDER": paid.out_trade_no,
        "PAID_FEE": str(paid.total_fee),
        "PAID_TX": transactions[paid.out_trade_no],
        "PRODUCT": str(product),
        "APPID": settings.appid,
        "MCH_ID": settings.mch_id,
        "NONCE": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "ADMIN_TOKEN": ADMIN["X-Admin-Token"],
        **_refund_infos(settings, paid.out_trade_no, paid.total_fee),
    }


def _refund_infos(settings: Settings, out_trade_no: str, total_fee: int) -> dict[str, str]:
    """Encrypted refund results (``req_info``, PROTOCOL.md §6.5) for refunds we never asked for:
    with our key, with another key, and with SQL for a refund number."""

    def req_info(out_refund_no: str, api_key: str | None = None) -> str:
        body = refund_notify_body(
            settings,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            total_fee=total_fee,
            refund_fee=total_fee,
            api_key=api_key,
        )
        return from_xml(body)["req_info"]

    return {
        "REFUND_INFO": req_info("RNEVERASKED0001"),
        "REFUND_INFO_FOREIGN_KEY": req_info("RNEVERASKED0002", api_key="f" * 32),
        "REFUND_INFO_SQL": req_info("'; DROP TABLE refunds; --"),
    }


def _v3_cases(version: PayVersion, http: httpx.AsyncClient, values: dict[str, str]) -> list[Case]:
    """On v3: every hostile payment notify of the fast suite, aimed at our unpaid order, and
    two refund notifies for the paid one that are not WeChat's (another mchid, a forged
    signature)."""
    if version.material is None:
        return []
    order = {"out_trade_no": values["ORDER"], "total_fee": int(values["ORDER_FEE"])}
    scene = Scene(http, version.material, version.merchant, order)
    cases = [
        Case(f"v3_notify/{name}", name, "POST", V3_NOTIFY_PATH, *attack(scene), V3_FAIL)
        for name, attack in sorted(ATTACKS.items())
    ]
    return cases + _v3_refund_cases(version.material, version.merchant, values)


def _v3_refund_cases(
    material: DevMaterial, merchant: Settings, values: dict[str, str]
) -> list[Case]:
    fee = int(values["PAID_FEE"])
    refund = {
        "mchid": merchant.mch_id, "out_trade_no": values["PAID_ORDER"],
        "transaction_id": values["PAID_TX"], "out_refund_no": "RNEVERASKED0003",
        "refund_id": "50300000000000000000000001", "refund_status": "SUCCESS",
        "amount": {"total": fee, "refund": fee, "payer_total": fee, "payer_refund": fee},
    }  # fmt: skip
    event = "REFUND.SUCCESS"
    foreign = signed_notify(material.config, merchant.mch_id, {**refund, "mchid": "1000000001"},
                            event_type=event)  # fmt: skip
    headers, body = signed_notify(material.config, merchant.mch_id, refund, event_type=event)
    forged = {**headers, "Wechatpay-Signature": flip(headers["Wechatpay-Signature"], 3)}
    return [
        Case("v3_refund_notify/another mchid", "another mchid", "POST", REFUND_NOTIFY,
             *foreign, V3_FAIL),
        Case("v3_refund_notify/forged signature", "forged signature", "POST", REFUND_NOTIFY,
             forged, body, V3_FAIL),
    ]  # fmt: skip


def _v3_secrets(material: DevMaterial | None) -> list[str]:
    """The APIv3 key, and a line of the merchant's private key (any dump of it holds one)."""
    if material is None:
        return []
    key_lines = material.merchant_private_key_pem.decode().splitlines()
    return [material.config.api_v3_key, key_lines[1]]


async def _secrets(settings: Settings, engine: AsyncEngine) -> list[str]:
    box = SecretBox(
        derive_key(settings.secret_key.get_secret_value(), "wxpay session_key at rest v1")
    )
    async with engine.connect() as conn:
        users = (await conn.execute(text("SELECT openid, session_key_sealed FROM users"))).all()
    session_keys = [box.open(u.session_key_sealed, context=u.openid) for u in users]
    configured = [
        settings.api_key.get_secret_value(),
        settings.app_secret.get_secret_value(),
        settings.secret_key.get_secret_value(),
    ]
    return configured + session_keys


async def _largest_refused_row(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        sql = "SELECT max(length(raw)) FROM payment_notifies WHERE raw LIKE '{\"sha256\"%'"
        largest = (await conn.execute(text(sql))).scalar()
    assert largest is not None  # the corpus has refused notifies
    return int(largest)


async def _state(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        return tuple((await conn.execute(STATE)).one())


async def _send(http: httpx.AsyncClient, service: ServiceProcess, case: Case) -> httpx.Response:
    content = _chunks(case.body) if case.chunked else case.body or None
    return await http.request(
        case.method, service.base_url + case.path, headers=case.headers, content=content
    )


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _judge(case: Case, response: httpx.Response, secrets: list[str]) -> list[str]:
    problems = []
    status = response.status_code
    reply = response.text + json.dumps(dict(response.headers))
    if status >= 500:
        problems.append(f"server error {status}")
    if leaked := [s[:4] + "…" for s in secrets if s in reply]:
        problems.append(f"reply contains secrets {leaked}")
    if any(marker in reply for marker in LEAK_MARKERS):
        problems.append("reply contains file contents or a traceback")
    if isinstance(case.expect, dict):
        if status != case.expect["status"] or not _is_error_envelope(response):
            problems.append(
                f"expected {case.expect['status']} with an error envelope, got {status}"
            )
    elif case.expect == "4xx" and not 400 <= status < 500:
        problems.append(f"expected a 4xx, got {status}")
    elif case.expect == "fail" and _return_code(response) != "FAIL":
        problems.append(f"expected an XML FAIL, got {status} {response.text[:80]!r}")
    elif case.expect == V3_FAIL and not (400 <= status < 500 and _v3_code(response) == "FAIL"):
        problems.append(f'expected a 4xx with {{"code": "FAIL"}}, got {status} {reply[:80]!r}')
    if (
        case.path.startswith("/wechat/")
        and case.method == "POST"
        and (_v3_code if case.expect == V3_FAIL else _return_code)(response) != "FAIL"
    ):
        problems.append(f"notify not answered with FAIL: {response.text[:80]!r}")
    return problems


def _return_code(response: httpx.Response) -> str | None:
    try:
        return from_xml(response.content).get("return_code")
    except XmlRejected:
        return None


def _v3_code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _is_error_envelope(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and bool(error.get("code")) and bool(error.get("message"))


# The corpus found these; each is pinned here on its own, in-process and fast.
@pytest.mark.parametrize(
    "body",
    [
        b"<xml><return_code>SUC\x00CESS</return_code></xml>",
        "<xml><return_code>SUCCESS</return_code></xml>".encode("utf-16"),
    ],
    ids=["nul byte", "utf-16"],
)
async def test_notify_body_with_nul_bytes_is_refused_not_answered_503(
    client: httpx.AsyncClient, engine: AsyncEngine, pg_database_url: str, body: bytes
) -> None:
    # PostgreSQL text cannot hold NUL: the audit excerpt of the body must not carry it raw,
    # or every copy of the message is a 503 and WeChat retries it for 24 hours.
    response = await client.post("/wechat/pay/notify", content=body)

    assert response.status_code == 400
    assert _return_code(response) == "FAIL"


@pytest.mark.parametrize("field", ["out_trade_no", "transaction_id"])
async def test_signed_notify_with_an_oversized_id_is_refused_not_answered_503(
    client: httpx.AsyncClient, settings: Settings, pg_database_url: str, field: str
) -> None:
    from tests.payments.test_notify import signed_notify

    fields = {"out_trade_no": "ORD1", "transaction_id": "4200000000000001", field: "4" * 300}
    body = signed_notify(settings, total_fee=1, cash_fee=1, **fields)

    response = await client.post("/wechat/pay/notify", content=body)

    assert response.status_code < 500
    assert _return_code(response) == "FAIL"

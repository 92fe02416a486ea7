"""Hostile and malformed notifies: a clear FAIL, nothing changed (PROTOCOL.md §9)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.wechat.signing import sign
from app.wechat.xmlcodec import from_xml, to_xml
from tests.helpers import add_product, create_order, login, scalar
from tests.payments.test_notify import NOTIFY, signed_notify
from tests.plugins.simulator import SimulatorHandle

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><return_code>SUCCESS</return_code><out_trade_no>&xxe;</out_trade_no></xml>"""
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><xml><a>&lol9;</a></xml>"
)
HOSTILE = {
    "external entity": XXE,
    "billion laughs": BILLION_LAUGHS,
    "not utf-8": "<xml><return_code>成功</return_code></xml>".encode("gbk"),
    "truncated": b"<xml><return_code><![CDATA[SUCCESS]]></return_code><sign>",
    "not xml": b'{"return_code": "SUCCESS"}',
    "empty": b"",
    "nested": b"<xml><return_code><a>SUCCESS</a></return_code></xml>",
    "other root": b"<root><return_code>SUCCESS</return_code></root>",
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, body: bytes
) -> None:
    response = await client.post(NOTIFY, content=body, headers={"content-type": "text/xml"})

    assert response.status_code == 400
    assert from_xml(response.content)["return_code"] == "FAIL"
    assert "root:" not in response.text  # nothing of /etc/passwd
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "BAD_XML"
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0


async def test_ten_megabyte_body_is_refused_without_reading_it_all(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b"<xml><a>" + b"A" * (10 * 1024 * 1024) + b"</a></xml>"

    response = await client.post(NOTIFY, content=body)

    assert response.status_code == 413
    assert from_xml(response.content)["return_code"] == "FAIL"
    assert await scalar(engine, "SELECT count(*) FROM orders") == 0


async def test_forged_signature_is_refused(
    client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    body = signed_notify(
        settings, out_trade_no="ORD1", transaction_id="4200000000000009", total_fee=1, cash_fee=1
    ).replace(b"<total_fee>1</total_fee>", b"<total_fee>2</total_fee>")

    response = await client.post(NOTIFY, content=body)

    assert response.status_code == 400
    assert from_xml(response.content)["return_code"] == "FAIL"
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "BAD_SIGNATURE"


def _signed_fields(settings: Settings, out_trade_no: str, total_fee: str) -> dict[str, str]:
    fields = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "appid": settings.appid,
        "mch_id": settings.mch_id,
        "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "trade_type": "JSAPI",
        "total_fee": total_fee,
        "cash_fee": total_fee,
        "transaction_id": "4200000000000000000000000099",
        "out_trade_no": out_trade_no,
        "time_end": "20261127101500",
    }
    return {**fields, "sign": sign(fields, settings.api_key.get_secret_value())}


def _plain_xml(fields: dict[str, str], total_fee_tag: str = "<total_fee>") -> str:
    inner = "".join(
        f"{total_fee_tag if name == 'total_fee' else f'<{name}>'}{value}</{name}>"
        for name, value in fields.items()
    )
    return f"<xml>{inner}</xml>"


# Each form below carries a signature made with the real key over what the old, lax reading
# took from it, and was acknowledged and paid before the strict reading (issue 15, item 6).
# WeChat sends none of them (PROTOCOL.md §2: flat UTF-8 XML, Int fields as bare digits).
NON_CANONICAL = {
    "utf-16 without a BOM, with a DOCTYPE and an entity": lambda f: (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE xml [<!ENTITY e "x">]>' + _plain_xml(f)
    ).encode("utf-16-le"),
    "utf-16 big-endian without a BOM": lambda f: _plain_xml(f).encode("utf-16-be"),
    "an attribute on a field": lambda f: _plain_xml(f, '<total_fee amount="1">').encode(),
    "an attribute on the root": lambda f: _plain_xml(f).replace("<xml>", '<xml a="1">', 1).encode(),
}
LAX_AMOUNTS = ["990.0", " 990 ", "+990", "0990", "9_90"]


@pytest.mark.parametrize("render", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
async def test_a_correctly_signed_notify_in_a_form_wechat_never_sends_pays_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    fresh_simulator: SimulatorHandle,
    render: Any,
) -> None:
    order = await _unpaid_order(client, fresh_simulator, fee=990)
    body = render(_signed_fields(settings, order, "990"))

    response = await client.post(NOTIFY, content=body, headers={"content-type": "text/xml"})

    assert response.status_code == 400
    assert from_xml(response.content)["return_code"] == "FAIL"
    assert await scalar(engine, "SELECT verdict FROM payment_notifies") == "BAD_XML"
    assert await _status(engine, order) == "NOTPAY"


@pytest.mark.parametrize("amount", LAX_AMOUNTS)
async def test_a_correctly_signed_amount_that_is_not_bare_digits_pays_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    fresh_simulator: SimulatorHandle,
    amount: str,
) -> None:
    order = await _unpaid_order(client, fresh_simulator, fee=990)
    body = _plain_xml(_signed_fields(settings, order, amount)).encode()

    response = await client.post(NOTIFY, content=body, headers={"content-type": "text/xml"})

    assert response.status_code == 400
    assert from_xml(response.content)["return_code"] == "FAIL"
    assert await _status(engine, order) == "NOTPAY"


@pytest.mark.parametrize("cdata", [False, True], ids=["plain text", "CDATA"])
async def test_the_canonical_form_pays_in_plain_text_and_in_cdata(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    fresh_simulator: SimulatorHandle,
    cdata: bool,
) -> None:
    order = await _unpaid_order(client, fresh_simulator, fee=990)
    fields = _signed_fields(settings, order, "990")
    body = to_xml(fields) if cdata else _plain_xml(fields).encode()

    response = await client.post(NOTIFY, content=body, headers={"content-type": "text/xml"})

    assert from_xml(response.content)["return_code"] == "SUCCESS"
    assert await _status(engine, order) == "SUCCESS"


async def _unpaid_order(client: httpx.AsyncClient, simulator: SimulatorHandle, fee: int) -> str:
    auth = await login(client, simulator)
    order = await create_order(client, auth, await add_product(client, price_fen=fee))
    return str(order["out_trade_no"])


async def _status(engine: AsyncEngine, out_trade_no: str) -> str:
    return str(
        await scalar(engine, "SELECT status FROM orders WHERE out_trade_no = :n", n=out_trade_no)
    )

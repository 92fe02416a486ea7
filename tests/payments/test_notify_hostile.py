"""Hostile and malformed notifies: a clear FAIL, nothing changed (PROTOCOL.md §9)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.wechat.xmlcodec import from_xml
from tests.helpers import scalar
from tests.payments.test_notify import NOTIFY, signed_notify

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

"""Minimal reference handlers: the ceiling for the service's two hot paths on this machine.

A bare ASGI app (no framework, no ORM) run under the same uvicorn as the service, on raw asyncpg
against its own database with the service's schema. It does the same protocol work with the
same functions (``app.wechat`` hardened XML, signing), so the gap to the service is framework,
dependency injection, SQLAlchemy and service structure, not protocol code.

- ``POST /wechat/pay/notify``: hardened parse, verify the sign, appid/mch_id; in one
  transaction a guarded ``UPDATE orders ... WHERE status IN ('NOTPAY','PAYERROR') AND total_fee
  = $n`` and the audit ``INSERT``; commit; reply. When the UPDATE matches nothing, one SELECT
  tells a duplicate (acknowledged) from anything else.
- ``POST /api/v1/orders``: token lookup (one SELECT), product SELECT + order INSERT + commit, the
  pool connection released, unified order through ``httpx.AsyncClient`` on the aiohttp
  transport (signed XML, response parsed and verified), ``UPDATE`` prepay (autocommit), pay
  params, JSON reply.

With ``WXPAY_API_VERSION=v3`` and the service's v3 settings (``WXPAY_API_V3_KEY`` and the key
files), the same two paths do WeChat Pay v3's work instead, with ``app.wechat.v3``'s functions:

- ``POST /wechat/pay/v3/notify``: the RSA signature over the raw body checked with WeChat Pay's
  public key, the resource decrypted (AES-256-GCM), appid/mchid; then the same transaction;
  204, or 400 with a JSON FAIL.
- ``POST /api/v1/orders``: JSAPI prepay signed with the merchant key (RSA), the answer's
  signature verified (RSA), the pay params signed (RSA); the same database work.

Run: ``REF_DATABASE_URL=postgresql://... REF_PAY_API_BASE=http://127.0.0.1:9100
PYTHONPATH=bench uvicorn reference:app``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.config import Settings
from app.httpclient import build_http_client
from app.runtime import build_auth_keys
from app.wechat.signing import SignType, build_pay_params, new_nonce, sign_type_of, verify
from app.wechat.timefmt import from_wechat_time, to_wechat_time
from app.wechat.v3 import (
    MerchantSigner,
    decrypt_resource,
    load_private_key,
    load_public_key,
    verify_wechat_signature,
)
from app.wechat.xmlcodec import DEFAULT_MAX_BYTES, XmlRejected, from_xml, to_signed_xml, to_xml

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Reply = tuple[int, bytes, bytes]

SETTINGS = Settings(_env_file=None)
API_KEY = SETTINGS.api_key.get_secret_value()
TOKEN_KEY = build_auth_keys(SETTINGS).token_key
PAY_API = os.environ.get("REF_PAY_API_BASE", "http://127.0.0.1:9").rstrip("/")
NOTIFY_URL = "http://127.0.0.1:8000/wechat/pay/notify"
XML = b"application/xml"
JSON = b"application/json"
OK_XML = to_xml({"return_code": "SUCCESS", "return_msg": "OK"})
FAIL_XML = to_xml({"return_code": "FAIL", "return_msg": "refused"})
FAIL_JSON = b'{"code":"FAIL","message":"refused"}'
V3 = SETTINGS.api_version == "v3"
V3_NOTIFY_URL = "http://127.0.0.1:8000/wechat/pay/v3/notify"
ACKNOWLEDGED = ("PAID", "DUPLICATE")


class V3Keys:
    """The merchant's signer and WeChat Pay's public key, loaded once (v3 only)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.api_v3_key and settings.mch_cert_serial_no
        assert settings.merchant_private_key_path and settings.wechatpay_public_key_path
        key = load_private_key(Path(settings.merchant_private_key_path).read_bytes())
        self.signer = MerchantSigner(settings.mch_id, settings.mch_cert_serial_no.upper(), key)
        self.wechat = load_public_key(Path(settings.wechatpay_public_key_path).read_bytes())
        self.wechat_id = settings.wechatpay_public_key_id or ""
        self.api_v3_key = settings.api_v3_key.get_secret_value()


V3_KEYS = V3Keys(SETTINGS) if V3 else None


class State:
    pool: asyncpg.Pool
    http: httpx.AsyncClient


state = State()

PAY_SQL = """UPDATE orders SET status = 'SUCCESS', transaction_id = $3, paid_at = $4,
 cash_fee = $5, bank_type = $6, updated_at = now()
 WHERE out_trade_no = $1 AND status IN ('NOTPAY', 'PAYERROR') AND total_fee = $2 RETURNING id"""
STATE_SQL = "SELECT transaction_id, total_fee FROM orders WHERE out_trade_no = $1"
AUDIT_SQL = """INSERT INTO payment_notifies (received_at, verdict, raw, detail, out_trade_no,
 transaction_id, total_fee) VALUES (now(), $1, $2, '', $3, $4, $5)"""
SESSION_SQL = """SELECT s.user_id, u.openid, s.expires_at FROM auth_sessions s
 JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1"""
PRODUCT_SQL = "SELECT price_fen, description FROM products WHERE id = $1 AND active"
INSERT_SQL = f"""INSERT INTO orders (out_trade_no, user_id, openid, product_id, quantity,
 total_fee, description, status, sign_type, client_ip, time_expire, created_at, updated_at,
 api_version) VALUES ($1, $2, $3, $4, $5, $6, $7, 'NOTPAY', '{"RSA" if V3 else "MD5"}', $8, $9,
 now(), now(), '{SETTINGS.api_version}') RETURNING id, created_at"""
PREPAY_SQL = """UPDATE orders SET prepay_id = $2, prepay_expires_at = $3, prepay_error = NULL,
 updated_at = now() WHERE out_trade_no = $1 AND status IN ('NOTPAY', 'PAYERROR')"""


# --- notify ---------------------------------------------------------------------------------


async def payment_notify(body: bytes) -> Reply:
    try:
        fields = from_xml(body)
        sign_type = sign_type_of(fields, SignType.MD5)
    except (XmlRejected, ValueError):
        return 400, FAIL_XML, XML
    if not _is_wechat(fields, sign_type):
        return 400, FAIL_XML, XML
    no, txid, fee = fields["out_trade_no"], fields["transaction_id"], int(fields["total_fee"])
    paid_at = from_wechat_time(fields["time_end"])
    cash_fee = int(fields["cash_fee"]) if fields.get("cash_fee") else None
    payment = (no, fee, txid, paid_at, cash_fee, fields.get("bank_type"))
    verdict = await settle(payment, json.dumps(fields, ensure_ascii=False))
    return (200, OK_XML, XML) if verdict in ACKNOWLEDGED else (200, FAIL_XML, XML)


async def settle(payment: tuple[Any, ...], raw: str) -> str:
    """The guarded UPDATE and the audit INSERT in one transaction; the verdict."""
    no, fee, txid = payment[:3]
    async with state.pool.acquire() as conn, conn.transaction():
        paid = await conn.fetchval(PAY_SQL, *payment)
        verdict = "PAID" if paid is not None else await _unpaid_verdict(conn, no, txid, fee)
        await conn.execute(AUDIT_SQL, verdict, raw, no, txid, fee)
    return verdict


async def payment_notify_v3(scope: Scope, body: bytes) -> Reply:
    assert V3_KEYS is not None
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    try:
        transaction = _open_v3_notify(V3_KEYS, headers, body)
        amount = transaction["amount"]
        no, txid, fee = transaction["out_trade_no"], transaction["transaction_id"], amount["total"]
        paid_at = dt.datetime.fromisoformat(transaction["success_time"])
        payment = (no, int(fee), txid, paid_at, amount.get("payer_total"), transaction["bank_type"])
    except (ValueError, KeyError, TypeError):
        return 400, FAIL_JSON, JSON
    verdict = await settle(payment, json.dumps(transaction, ensure_ascii=False))
    return (204, b"", JSON) if verdict in ACKNOWLEDGED else (400, FAIL_JSON, JSON)


def _open_v3_notify(keys: V3Keys, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    if headers.get("wechatpay-serial") != keys.wechat_id:
        raise ValueError("unknown key")
    verify_wechat_signature(
        timestamp=headers.get("wechatpay-timestamp", ""),
        nonce=headers.get("wechatpay-nonce", ""),
        body=body,
        signature=headers.get("wechatpay-signature", ""),
        key=keys.wechat,
        now=int(time.time()),
    )
    envelope = json.loads(body)
    resource = envelope["resource"]
    if envelope["resource_type"] != "encrypt-resource" or resource["algorithm"] != (
        "AEAD_AES_256_GCM"
    ):
        raise ValueError("not an encrypted resource")
    transaction: dict[str, Any] = json.loads(
        decrypt_resource(
            keys.api_v3_key,
            nonce=resource["nonce"],
            associated_data=resource.get("associated_data") or "",
            ciphertext=resource["ciphertext"],
        )
    )
    ours = (transaction["appid"], transaction["mchid"]) == (SETTINGS.appid, SETTINGS.mch_id)
    if not ours or transaction["trade_state"] != "SUCCESS":
        raise ValueError("not a payment of ours")
    return transaction


def _is_wechat(fields: dict[str, str], sign_type: SignType) -> bool:
    return (
        fields.get("return_code") == "SUCCESS"
        and fields.get("result_code") == "SUCCESS"
        and verify(fields, API_KEY, sign_type)
        and fields.get("appid") == SETTINGS.appid
        and fields.get("mch_id") == SETTINGS.mch_id
    )


async def _unpaid_verdict(conn: asyncpg.Connection, no: str, txid: str, fee: int) -> str:
    row = await conn.fetchrow(STATE_SQL, no)
    if row is None:
        return "UNKNOWN_ORDER"
    if row["total_fee"] != fee:
        return "AMOUNT_MISMATCH"
    return "DUPLICATE" if row["transaction_id"] == txid else "TRANSACTION_CONFLICT"


# --- create order ---------------------------------------------------------------------------


async def create_order(scope: Scope, body: bytes) -> Reply:
    token = _bearer(scope)
    try:
        request = json.loads(body)
        product_id, quantity = int(request["product_id"]), int(request["quantity"])
    except (ValueError, KeyError, TypeError):
        return _error(422, "VALIDATION_ERROR")
    now = dt.datetime.now(dt.UTC)
    async with state.pool.acquire() as conn:
        user = await conn.fetchrow(SESSION_SQL, _hash(token))
        if user is None or user["expires_at"] <= now:
            return _error(401, "SESSION_INVALID")
        async with conn.transaction():
            product = await conn.fetchrow(PRODUCT_SQL, product_id)
            if product is None:
                return _error(404, "PRODUCT_NOT_FOUND")
            order = _new_order(user, product, product_id, quantity, scope, now)
            row = await conn.fetchrow(INSERT_SQL, *order.values())
    prepay_id = await (jsapi_prepay(order) if V3_KEYS else unified_order(order))
    async with state.pool.acquire() as conn:
        await conn.execute(
            PREPAY_SQL, order["out_trade_no"], prepay_id, now + dt.timedelta(hours=2)
        )
    if V3_KEYS:
        timestamp = str(int(time.time()))
        params = V3_KEYS.signer.pay_params(SETTINGS.appid, prepay_id, timestamp=timestamp)
    else:
        params = build_pay_params(
            appid=SETTINGS.appid, prepay_id=prepay_id, api_key=API_KEY, sign_type=SignType.MD5
        )
    return 201, json.dumps(_order_out(order, row, params)).encode(), JSON


def _new_order(
    user: asyncpg.Record,
    product: asyncpg.Record,
    product_id: int,
    quantity: int,
    scope: Scope,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "out_trade_no": now.strftime("%Y%m%d%H%M%S") + new_nonce(12).upper(),
        "user_id": user["user_id"],
        "openid": user["openid"],
        "product_id": product_id,
        "quantity": quantity,
        "total_fee": product["price_fen"] * quantity,
        "description": product["description"],
        "client_ip": (scope.get("client") or ("127.0.0.1", 0))[0],
        "time_expire": now + dt.timedelta(minutes=30),
    }


async def unified_order(order: dict[str, Any]) -> str:
    fields: dict[str, object] = {
        "appid": SETTINGS.appid,
        "mch_id": SETTINGS.mch_id,
        "nonce_str": new_nonce(),
        "body": order["description"],
        "attach": f"p{order['product_id']}x{order['quantity']}",
        "out_trade_no": order["out_trade_no"],
        "total_fee": order["total_fee"],
        "spbill_create_ip": order["client_ip"],
        "time_expire": to_wechat_time(order["time_expire"]),
        "notify_url": NOTIFY_URL,
        "trade_type": "JSAPI",
        "openid": order["openid"],
    }
    body = to_signed_xml(fields, API_KEY)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    reply = await state.http.post(PAY_API + "/pay/unifiedorder", content=body, headers=headers)
    answer = from_xml(reply.content)
    if not (
        reply.status_code == 200
        and answer.get("return_code") == "SUCCESS"
        and verify(answer, API_KEY)
        and answer.get("appid") == SETTINGS.appid
        and answer.get("mch_id") == SETTINGS.mch_id
        and answer.get("result_code") == "SUCCESS"
    ):
        raise RuntimeError(f"unified order refused: {answer}")
    return answer["prepay_id"]


async def jsapi_prepay(order: dict[str, Any]) -> str:
    """v3 JSAPI prepay (PROTOCOL.md §8.1): signed request, verified answer."""
    assert V3_KEYS is not None
    path = "/v3/pay/transactions/jsapi"
    fields = {
        "appid": SETTINGS.appid,
        "mchid": SETTINGS.mch_id,
        "description": order["description"],
        "out_trade_no": order["out_trade_no"],
        "notify_url": V3_NOTIFY_URL,
        "amount": {"total": order["total_fee"], "currency": "CNY"},
        "payer": {"openid": order["openid"]},
        "time_expire": order["time_expire"].isoformat(timespec="seconds"),
        "attach": f"p{order['product_id']}x{order['quantity']}",
    }
    content = json.dumps(fields, ensure_ascii=False).encode()
    authorization = V3_KEYS.signer.authorization(
        "POST", path, content, timestamp=str(int(time.time()))
    )
    headers = {
        "Authorization": authorization,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Wechatpay-Serial": V3_KEYS.wechat_id,
    }
    reply = await state.http.post(PAY_API + path, content=content, headers=headers)
    verify_wechat_signature(
        timestamp=reply.headers.get("Wechatpay-Timestamp", ""),
        nonce=reply.headers.get("Wechatpay-Nonce", ""),
        body=reply.content,
        signature=reply.headers.get("Wechatpay-Signature", ""),
        key=V3_KEYS.wechat,
        now=int(time.time()),
    )
    if reply.status_code != 200 or reply.headers.get("Wechatpay-Serial") != V3_KEYS.wechat_id:
        raise RuntimeError(f"JSAPI prepay refused: {reply.text}")
    prepay_id: str = json.loads(reply.content)["prepay_id"]
    return prepay_id


def _order_out(
    order: dict[str, Any], row: asyncpg.Record, params: dict[str, str]
) -> dict[str, Any]:
    return {
        "out_trade_no": order["out_trade_no"],
        "product_id": order["product_id"],
        "quantity": order["quantity"],
        "total_fee": order["total_fee"],
        "description": order["description"],
        "status": "NOTPAY",
        "created_at": row["created_at"].isoformat(),
        "time_expire": order["time_expire"].isoformat(),
        "pay_params": params,
    }


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return str(value[7:].decode("latin-1"))
    return ""


def _hash(token: str) -> str:
    return hmac.new(TOKEN_KEY, token.encode(), hashlib.sha256).hexdigest()


def _error(status: int, code: str) -> Reply:
    return status, json.dumps({"error": {"code": code, "message": code}}).encode(), JSON


# --- ASGI -----------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > DEFAULT_MAX_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _route(scope: Scope, body: bytes) -> Reply:
    method, path = scope["method"], scope["path"]
    if method == "POST" and path == "/wechat/pay/notify":
        return await payment_notify(body)
    if method == "POST" and path == "/wechat/pay/v3/notify" and V3:
        return await payment_notify_v3(scope, body)
    if method == "POST" and path == "/api/v1/orders":
        return await create_order(scope, body)
    if path == "/healthz":
        return 200, b'{"status":"ok"}', JSON
    return 404, b"", JSON


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            url = os.environ["REF_DATABASE_URL"]
            # No reset query on release, like the service (app/uow.py): the reference stays the
            # leanest way to do the same work.
            state.pool = await asyncpg.create_pool(url, min_size=10, max_size=20, reset=_no_reset)
            state.http = build_http_client(SETTINGS)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await state.http.aclose()
            await state.pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _no_reset(conn: object) -> None:
    return None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _read_body(receive)
    status, content, media = (413, b"", JSON) if body is None else await _route(scope, body)
    headers = [(b"content-type", media), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})

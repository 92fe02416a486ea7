"""The merchant's side of WeChat Pay v3 against the simulator: our own ``WeChatPayV3Client``
built from a generated key set, and what a test needs to read the simulator's notifies."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app.simulator import Simulator
from app.simulator.v3keys import DevMaterial, WeChatPayKey
from app.wechat.retry import RetryPolicy
from app.wechat.v3 import MerchantSigner, decrypt_resource, load_private_key, load_public_key
from app.wechat.v3client import WeChatPayV3Client
from app.wechat.v3trust import WeChatPayTrust
from tests.hermetic import hermetic_settings
from tests.plugins.simulator import SimulatorHandle
from tests.simulator.helpers import fast_config

NOTIFY_URL = "http://127.0.0.1:9/wechat/pay/v3/notify"  # nobody listens: read the log instead


@dataclass(frozen=True)
class V3Simulator:
    """A running simulator with v3 keys, and the merchant's half of those keys."""

    handle: SimulatorHandle
    material: DevMaterial

    @property
    def mchid(self) -> str:
        return self.handle.config.mch_id

    @property
    def appid(self) -> str:
        return self.handle.config.appid

    @property
    def api_v3_key(self) -> str:
        return self.material.config.api_v3_key

    def signer(self) -> MerchantSigner:
        return merchant_signer(self.material, self.mchid)

    def client(
        self,
        http: httpx.AsyncClient,
        *,
        key: WeChatPayKey | None = None,
        trust: WeChatPayTrust | None = None,
        api_v3_key: str | None = None,
    ) -> WeChatPayV3Client:
        """Our v3 client, trusting ``key`` (the first signing key unless given) or ``trust``."""
        return v3_client(
            http, self.material, api_base=self.handle.base_url, appid=self.appid, key=key,
            trust=trust, api_v3_key=api_v3_key,
        )  # fmt: skip

    async def place_order(
        self, client: WeChatPayV3Client, out_trade_no: str, total: int = 100, **extra: Any
    ) -> str:
        """A fresh payer's JSAPI order; its ``prepay_id``."""
        _, openid = await self.handle.login_code()
        return await client.jsapi_prepay(
            description="示例商城-会员充值",
            out_trade_no=out_trade_no,
            total=total,
            openid=openid,
            notify_url=NOTIFY_URL,
            **extra,
        )

    def decrypt(self, body: str | bytes) -> dict[str, Any]:
        """A notify's resource, decrypted with the merchant's APIv3 key."""
        resource = json.loads(body)["resource"]
        plaintext = decrypt_resource(
            self.api_v3_key,
            nonce=resource["nonce"],
            associated_data=resource["associated_data"],
            ciphertext=resource["ciphertext"],
        )
        decrypted: dict[str, Any] = json.loads(plaintext)
        return decrypted


def merchant_signer(material: DevMaterial, mchid: str) -> MerchantSigner:
    key = _private_key(material.merchant_private_key_pem)
    return MerchantSigner(mchid, material.config.merchant_serial_no, key)


@functools.cache
def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    return load_private_key(pem)  # ~35 ms: it checks the key; once per session


def v3_client(
    http: httpx.AsyncClient,
    material: DevMaterial,
    *,
    api_base: str,
    appid: str,
    key: WeChatPayKey | None = None,
    trust: WeChatPayTrust | None = None,
    api_v3_key: str | None = None,
) -> WeChatPayV3Client:
    """Our ``WeChatPayV3Client`` for the generated merchant, as the service would build it:
    trusting ``key`` (the first signing key unless given), or ``trust`` when given."""
    if trust is None:
        trusted = key or material.config.signing_keys[0]
        trust = WeChatPayTrust((trusted.serial, load_public_key(trusted.public_key_pem)))
    return WeChatPayV3Client(
        http,
        api_base=api_base,
        appid=appid,
        signer=merchant_signer(material, hermetic_settings().mch_id),
        trust=trust,
        api_v3_key=SecretStr(api_v3_key or material.config.api_v3_key),
        retry=RetryPolicy(max_attempts=1),
    )


def signed_headers(signer: MerchantSigner, method: str, url: str, body: bytes) -> dict[str, str]:
    """What a v3 client sends, for tests that build the request by hand."""
    authorization = signer.authorization(method, url, body, timestamp=str(int(time.time())))
    return {
        "Authorization": authorization,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }


@dataclass
class V3Receiver:
    """A v3 notify URL in process: answers with ``replies`` in turn (HTTP statuses, or
    ``(status, body)``), then 204 forever; keeps what it was sent."""

    replies: list[int | tuple[int, bytes]] = field(default_factory=list)
    received: list[httpx.Request] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        reply = self.replies.pop(0) if self.replies else 204
        status, body = reply if isinstance(reply, tuple) else (reply, b"")
        return httpx.Response(status, content=body)


@asynccontextmanager
async def in_process_v3(
    material: DevMaterial, receiver: V3Receiver
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """A simulator with v3 keys in this event loop, its notifies going to ``receiver``, and an
    HTTP client that reaches it without a socket."""
    config = fast_config(v3=material.config)
    simulator = Simulator(config, notify_transport=httpx.MockTransport(receiver.handle))
    transport = httpx.ASGITransport(app=simulator.app)
    async with (
        simulator,
        httpx.AsyncClient(transport=transport, base_url="http://wechat.test") as http,
    ):
        yield simulator, http


async def settled_attempts(
    handle: SimulatorHandle, count: int = 1, *, within: float = 5.0, **match: Any
) -> list[dict[str, Any]]:
    """Once ``count`` finished attempts have the ``match`` fields (``kind="refund"``, ...),
    those attempts; a failed delivery's retries cannot stand in for another notify."""
    deadline = time.monotonic() + within
    while True:
        attempts = await handle.notifies()
        found = [
            a
            for a in attempts
            if a["verdict"] != "pending" and all(a[k] == v for k, v in match.items())
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)

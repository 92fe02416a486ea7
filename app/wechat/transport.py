"""One HTTP exchange with WeChat, failures classified once (STYLE.md "Errors").

Timeouts, transport errors, 429 and 5xx become ``WeChatUnavailable``; any other non-2xx status
is a final ``WeChatRejected``. Bodies are read with a size cap so a misbehaving upstream cannot
make us buffer without bound.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from app.logging_setup import note_wechat_call
from app.metrics import WECHAT_REQUESTS, child
from app.wechat.errors import WeChatRejected, WeChatUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    max_bytes: int,
    what: str,
    api: str,
    content: bytes | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Send one request and return whatever came back, transport failures classified.

    Error messages name the exception type only, and the cause is not chained: transport
    errors can quote the URL, and code2session's URL carries the app secret. Each exchange is
    timed and logged under ``api``, a fixed name (never the URL, which holds ids and secrets):
    a 2xx exchange made for a request in the request's access line, any other in its own line.
    """
    started = time.perf_counter()
    outcome = "cancelled"  # unless one of the outcomes below is reached
    try:
        reply = await _exchange(http, method, url, max_bytes, what, content, params, headers)
        outcome = f"http_{reply.status // 100}xx"
        return reply
    except WeChatUnavailable:
        outcome = "too_large"  # only _read_capped raises it here
        raise
    except httpx.TimeoutException as exc:
        outcome = "timeout"
        raise WeChatUnavailable(f"{what} timed out ({type(exc).__name__})") from None
    # aiohttp errors the httpx-aiohttp transport does not translate, undecodable bodies, and
    # socket errors.
    except (httpx.TransportError, httpx.DecodingError, aiohttp.ClientError, OSError) as exc:
        outcome = "transport_error"
        raise WeChatUnavailable(f"{what} failed in transport ({type(exc).__name__})") from None
    finally:
        _observe(api, outcome, time.perf_counter() - started)


def _observe(api: str, outcome: str, seconds: float) -> None:
    child(WECHAT_REQUESTS, api, outcome).observe(seconds)  # api and outcome: fixed sets
    duration_ms = round(seconds * 1000, 1)
    if note_wechat_call(api, outcome, duration_ms) and outcome == "http_2xx":
        return  # the request's access line reports it; anything else gets a line of its own
    extra = {"wechat_api": api, "outcome": outcome, "duration_ms": duration_ms}
    logger.info("WeChat %s: %s in %.1f ms", api, outcome, duration_ms, extra=extra)


async def _exchange(
    http: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    max_bytes: int,
    what: str,
    content: bytes | None,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> Reply:
    async with http.stream(method, url, content=content, params=params, headers=headers) as r:
        try:
            body = await _read_capped(r, max_bytes, what)
        except WeChatUnavailable:
            if 200 <= r.status_code < 300:
                raise
            body = b""  # an oversized error body: its status still says what happened
        return Reply(r.status_code, r.headers, body)


def success_body(reply: Reply, what: str) -> bytes:
    """The body of a 2xx reply; 429 and 5xx are ``WeChatUnavailable``, any other status final."""
    if reply.status == 429 or reply.status >= 500:
        raise WeChatUnavailable(f"{what} answered HTTP {reply.status}")
    if not 200 <= reply.status < 300:
        raise WeChatRejected(return_msg=f"{what} answered HTTP {reply.status}")
    return reply.body


async def _read_capped(response: httpx.Response, max_bytes: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise WeChatUnavailable(f"{what} answered with more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A reply body that must be a JSON object; anything else leaves the outcome unknown."""
    try:
        value = json.loads(body)
    except ValueError:
        raise WeChatUnavailable(f"{what} answered a body that is not JSON") from None
    if not isinstance(value, dict):
        raise WeChatUnavailable(f"{what} answered JSON that is not an object")
    return value

"""One body size limit for every route (issue 15, item 3): 413 in the error envelope, for a
declared Content-Length and for a chunked body alike, read no further than the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.wechat.xmlcodec import from_xml
from tests.conftest import ClientFactory
from tests.helpers import ADMIN
from tests.plugins.service import LiveFactory

LIMIT = 4096
CHUNK = b"x" * 1024


class CountingBody:
    """A request body streamed in 1 KiB chunks (no Content-Length: chunked), counting how many
    the server pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield CHUNK


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"
    assert str(LIMIT) in response.json()["error"]["message"]


async def test_a_declared_body_over_the_limit_is_refused_and_never_kept(
    make_client: ClientFactory,
) -> None:
    client = await make_client(max_body_bytes=LIMIT)
    body = CountingBody(1000)

    response = await client.post(
        "/api/v1/auth/login",
        content=body,
        headers={"content-type": "application/json", "content-length": str(1000 * len(CHUNK))},
    )

    assert_too_large(response)
    assert body.pulled == 1000  # drained (and dropped), so the client can read the answer


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/login", "/api/v1/orders", "/api/v1/admin/products", "/nowhere"]
)
async def test_a_chunked_body_over_the_limit_is_refused_on_every_route(
    make_client: ClientFactory, path: str
) -> None:
    client = await make_client(max_body_bytes=LIMIT)
    body = CountingBody(1000)

    response = await client.post(path, content=body, headers=ADMIN)

    assert "content-length" not in response.request.headers
    if path == "/nowhere":
        assert response.status_code == 404  # nothing reads a body there: nothing to refuse
        return
    assert_too_large(response)


async def test_a_chunked_body_is_counted_whatever_length_it_declares(
    make_client: ClientFactory,
) -> None:
    # Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): a declared length within the
    # limit does not excuse a chunked body from being counted.
    client = await make_client(max_body_bytes=LIMIT)
    body = CountingBody(1000)
    headers = {"content-length": "10", "transfer-encoding": "chunked", **ADMIN}

    response = await client.post("/api/v1/auth/login", content=body, headers=headers)

    assert_too_large(response)


async def test_a_body_at_the_limit_is_read_as_usual(make_client: ClientFactory) -> None:
    client = await make_client(max_body_bytes=LIMIT)
    padded = b'{"code": "' + b"a" * (LIMIT - 12) + b'"}'
    assert len(padded) == LIMIT

    response = await client.post(
        "/api/v1/auth/login", content=padded, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422  # read and validated: a code that long is refused
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_default_limit_is_one_mebibyte(make_client: ClientFactory) -> None:
    client = await make_client()
    over = b"[" + b"1," * (512 * 1024) + b"1]"

    response = await client.post(
        "/api/v1/auth/login", content=over, headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"


async def test_the_notify_url_keeps_its_own_limit_and_xml_reply(
    make_client: ClientFactory,
) -> None:
    client = await make_client(max_body_bytes=LIMIT)
    body = b"<xml><a>" + b"A" * (2 * LIMIT) + b"</a></xml>"  # over ours, under the notify's

    response = await client.post("/wechat/pay/notify", content=body)

    assert response.status_code == 400  # read and refused by the notify pipeline, in XML
    assert from_xml(response.content)["return_code"] == "FAIL"


async def test_uvicorn_cuts_off_a_chunked_body_and_keeps_serving(
    make_live_client: LiveFactory,
) -> None:
    client = await make_live_client(max_body_bytes=LIMIT)
    body = CountingBody(1000)

    response = await client.post(
        "/api/v1/auth/login", content=body, headers={"content-type": "application/json"}
    )

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_too_large(response)
    assert (await client.get("/healthz")).status_code == 200

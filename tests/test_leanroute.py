"""The client routes' planned path (app.leanroute) answers exactly as stock FastAPI does.

Two instances of the service share one database and one simulator: one plans its client
routes (the default), the other serves every request through FastAPI's generic handler
(``WXPAY_LEAN_ROUTES=false``). The same requests, good and bad, go to both, and the answers
must be the same: status, content type and body (for a new order, every field but the ones a
new order makes fresh: its number, its times and the signed payment parameters).
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from app.auth.router import router as auth_router
from app.leanroute import LeanRoute
from app.orders.router import router as orders_router
from app.products.router import router as products_router
from app.simulator.v3keys import DevMaterial
from tests.conftest import ClientFactory
from tests.helpers import add_product, create_order, login
from tests.payments.test_v3_flow import on_version, v3_simulator  # noqa: F401 (a fixture)
from tests.plugins.simulator import SimulatorHandle

JSON = {"Content-Type": "application/json"}
# Fields a new order makes fresh, so two creates never share them.
FRESH = {"out_trade_no", "created_at", "updated_at", "time_expire", "pay_params", "id"}


def routes_planned() -> dict[tuple[str, str], bool]:
    routes = [*orders_router.routes, *auth_router.routes, *products_router.routes]
    return {(method, r.path): r.planned for r in routes for method in r.methods}  # type: ignore[attr-defined]


async def test_the_client_routes_are_planned_and_the_setting_turns_it_off(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle
) -> None:
    for lean in (True, False):
        client = await make_client(lean_routes=lean)
        auth = await login(client, fresh_simulator)
        order = await create_order(client, auth, await add_product(client))
        no = order["out_trade_no"]
        for path in ("/api/v1/orders", f"/api/v1/orders/{no}", "/api/v1/auth/session"):
            assert (await client.get(path, headers=auth)).status_code == 200
        assert (await client.get("/api/v1/products")).status_code == 200
        assert (await client.post(f"/api/v1/orders/{no}/pay-params", headers=auth)).is_success

        planned = routes_planned()
        hot = [
            ("POST", "/api/v1/orders"),
            ("GET", "/api/v1/orders"),
            ("GET", "/api/v1/orders/{out_trade_no}"),
            ("POST", "/api/v1/orders/{out_trade_no}/pay-params"),
            ("GET", "/api/v1/auth/session"),
            ("GET", "/api/v1/products"),
        ]
        assert [planned[route] for route in hot] == [lean] * len(hot)
        # Shapes the plan does not know stay with FastAPI: login sets headers on a Response
        # parameter, logout has no response model.
        assert not planned["POST", "/api/v1/auth/login"]
        assert not planned["POST", "/api/v1/auth/logout"]


def answer(response: httpx.Response) -> tuple[int, str, Any]:
    """What a client sees, less what a new order makes fresh."""
    body: Any = response.content
    if response.headers.get("content-type") == "application/json":
        body = json.loads(response.content)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in FRESH}
    return response.status_code, response.headers.get("content-type", ""), body


def create_cases(token: str) -> list[tuple[str, dict[str, str], bytes]]:
    """``(what, headers, body)`` for ``POST /api/v1/orders``: the usual request and every
    way off it the plan must hand to FastAPI (or answer the same way itself)."""
    auth = {"Authorization": f"Bearer {token}"}
    ok = b'{"product_id": 1, "quantity": 2}'
    return [
        ("usual", {**auth, **JSON}, ok),
        (
            "charset in the content type",
            {**auth, "Content-Type": "application/json; charset=utf-8"},
            ok,
        ),
        ("a +json media type", {**auth, "Content-Type": "application/vnd.order+json"}, ok),
        ("text/plain", {**auth, "Content-Type": "text/plain"}, ok),
        ("no content type", auth, ok),
        ("quantity as a string", {**auth, **JSON}, b'{"product_id": 1, "quantity": "3"}'),
        ("quantity as 2.0", {**auth, **JSON}, b'{"product_id": 1, "quantity": 2.0}'),
        ("quantity 2.5", {**auth, **JSON}, b'{"product_id": 1, "quantity": 2.5}'),
        ("quantity 0", {**auth, **JSON}, b'{"product_id": 1, "quantity": 0}'),
        ("default quantity", {**auth, **JSON}, b'{"product_id": 1}'),
        ("no product", {**auth, **JSON}, b'{"quantity": 1}'),
        ("an extra field (a price)", {**auth, **JSON}, b'{"product_id": 1, "total_fee": 1}'),
        ("duplicate keys", {**auth, **JSON}, b'{"product_id": 99, "product_id": 1}'),
        ("unknown product", {**auth, **JSON}, b'{"product_id": 424242}'),
        ("not JSON", {**auth, **JSON}, b'{"product_id": 1,'),
        ("not UTF-8", {**auth, **JSON}, b'{"product_id": "\xff"}'),
        (
            "nested 5,000 deep",
            {**auth, **JSON},
            b'{"product_id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        ),
        ("empty body", {**auth, **JSON}, b""),
        ("null", {**auth, **JSON}, b"null"),
        ("an array", {**auth, **JSON}, b"[1, 2]"),
        ("no token", JSON, ok),
        ("a bad token", {"Authorization": "Bearer nope", **JSON}, ok),
        ("a bad token and a bad body", {"Authorization": "Bearer nope", **JSON}, b"{"),
        ("idempotency key", {**auth, **JSON, "Idempotency-Key": "k-1"}, ok),
        ("idempotency key again", {**auth, **JSON, "Idempotency-Key": "k-1"}, ok),
        ("idempotency key too long", {**auth, **JSON, "Idempotency-Key": "k" * 65}, ok),
    ]


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_creating_an_order_answers_as_stock_fastapi_does(
    make_client: ClientFactory,
    v3_simulator: SimulatorHandle,  # noqa: F811 (the fixture imported above)
    v3_material: DevMaterial,
    tmp_path: Path,
    version: str,
) -> None:
    """On either API version (the payment parameters differ): one simulator speaks both."""
    service = on_version(version, v3_material, tmp_path, v3_simulator.base_url)
    lean, stock = await make_client(**service), await make_client(**service, lean_routes=False)
    assert await add_product(lean) == 1
    token = (await login(lean, v3_simulator))["Authorization"].removeprefix("Bearer ")

    for what, headers, body in create_cases(token):
        answers = [
            answer(await client.post("/api/v1/orders", content=body, headers=headers))
            for client in (lean, stock)
        ]
        assert answers[0] == answers[1], what


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/orders",
        "/api/v1/orders?limit=1&offset=1",
        "/api/v1/orders?limit=0",
        "/api/v1/orders?limit=abc",
        "/api/v1/orders?offset=-1",
        "/api/v1/orders?limit=2&limit=3",
        "/api/v1/orders/{no}",
        "/api/v1/orders/{no}?sync=maybe",
        "/api/v1/orders/{no}?sync=true",
        "/api/v1/orders/{other}",
        "/api/v1/orders/NO_SUCH_ORDER",
        "/api/v1/auth/session",
        "/api/v1/products",
        "/api/v1/products?extra=1",
    ],
)
async def test_reads_answer_as_stock_fastapi_does(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, path: str
) -> None:
    lean, stock = await make_client(), await make_client(lean_routes=False)
    auth = await login(lean, fresh_simulator)
    product = await add_product(lean)
    mine = [await create_order(lean, auth, product) for _ in range(3)]
    other = await create_order(lean, await login(lean, fresh_simulator), product)
    path = path.format(no=mine[0]["out_trade_no"], other=other["out_trade_no"])

    for headers in (auth, {}, {"Authorization": "Bearer nope"}):
        lean_answer = await lean.get(path, headers=headers)
        stock_answer = await stock.get(path, headers=headers)
        assert (lean_answer.status_code, lean_answer.headers["content-type"]) == (
            stock_answer.status_code,
            stock_answer.headers["content-type"],
        )
        if "/auth/session" in path:  # "expires_in" counts down between the two calls
            assert lean_answer.json().keys() == stock_answer.json().keys()
        else:
            assert lean_answer.content == stock_answer.content


def post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI scope for ``POST path``, as a server would pass it to the app."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
        "server": ("service.test", 80), "state": {},
    }  # fmt: skip


async def served(
    client: httpx.AsyncClient, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]]
) -> tuple[list[int], list[dict[str, Any]]]:
    """The client's app called as a server calls it: the statuses it started answers with,
    and every message it sent."""
    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    await client._transport.app(scope, receive, keep)  # type: ignore[attr-defined]
    return [m["status"] for m in sent if m["type"] == "http.response.start"], sent


async def test_a_client_gone_before_its_body_arrives_is_answered_as_stock_fastapi_does(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle
) -> None:
    lean, stock = await make_client(), await make_client(lean_routes=False)
    token = (await login(lean, fresh_simulator))["Authorization"]
    headers = [
        (b"authorization", token.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", b"30"),
    ]

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    statuses = [
        (await served(client, post_scope("/api/v1/orders", headers), gone))[0]
        for client in (lean, stock)
    ]
    assert statuses[0] == statuses[1] == [400]


@pytest.mark.parametrize(
    ("body", "status", "lean"),
    [(b'{"product_id": 1}', 201, True), (b'{"product_id": "one"}', 422, False)],
)
async def test_a_planned_request_skips_fastapis_route_wrapper_and_a_hand_over_takes_it(
    make_client: ClientFactory,
    fresh_simulator: SimulatorHandle,
    body: bytes,
    status: int,
    lean: bool,
) -> None:
    """FastAPI's per-route wrapper opens the exit stacks that dependencies with ``yield``
    need and names them in the scope; a planned request has none, so it does not. A
    request handed over to FastAPI (a body that does not validate) goes through it, with
    the body the plan read given back: FastAPI's 422 names the field it refused (without the
    body, it would find the client gone and answer 400)."""
    client = await make_client()
    assert await add_product(client) == 1
    token = (await login(client, fresh_simulator))["Authorization"]
    headers = [(b"authorization", token.encode()), (b"content-type", b"application/json")]
    scope = post_scope("/api/v1/orders", headers)
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    statuses, sent = await served(client, scope, receive)
    assert statuses == [status]
    assert ("fastapi_inner_astack" in scope) is not lean
    # A refused body stored nothing: the plan called no dependency, FastAPI's 422 none either.
    orders = (await client.get("/api/v1/orders", headers={"Authorization": token})).json()
    assert len(orders["items"]) == (1 if lean else 0)
    if not lean:
        answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert answer["error"]["code"] == "VALIDATION_ERROR"
        assert "product_id" in answer["error"]["message"]


class Thing(BaseModel):
    n: int


def things_router(**options: Any) -> APIRouter:
    router = APIRouter(prefix="/things", route_class=LeanRoute, **options)

    @router.post("", response_model=Thing)
    async def add(thing: Thing) -> Thing:
        return thing

    return router


async def post_things(app: FastAPI, body: bytes) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        response = await client.post("/things", content=body, headers=JSON)
    return response.status_code


async def test_a_route_with_fastapis_own_body_limit_stays_with_fastapi() -> None:
    """FastAPI enforces a route's or router's ``max_body_size`` in the per-route wrapper a
    plan skips, so such a route is not planned, and the limit holds."""
    app = FastAPI()
    app.include_router(things_router(max_body_size=16))
    big = json.dumps({"n": 1, "padding": "x" * 100}).encode()
    assert (await post_things(app, b'{"n": 1}'), await post_things(app, big)) == (200, 413)
    assert not app.router.routes[-1].original_router.routes[0].planned  # type: ignore[attr-defined]


async def test_an_app_that_served_planned_requests_is_freed_with_its_plans() -> None:
    """A module's router is shared by every app that includes it (each test's app, for one);
    the plan for each inclusion must not keep that app alive."""
    router = things_router()
    apps = []
    for _ in range(3):
        app = FastAPI()
        app.include_router(router)
        assert await post_things(app, b'{"n": 1}') == 200
        apps.append(weakref.ref(app))
        del app
    gc.collect()
    assert router.routes[0].planned  # type: ignore[attr-defined]
    assert [ref() for ref in apps] == [None, None, None]

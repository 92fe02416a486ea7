"""The client routes' usual request, through FastAPI with less of its generic machinery.

FastAPI's request handler serves any signature: per request it walks the dependency tree
(caches, scopes, exit stacks), inspects the endpoint for error context and parses the content
type with ``email.message``. For the client routes that was a sixth of an order's CPU here
(docs/benchmarks.md). ``LeanRoute`` plans a route's handler once, from the dependant FastAPI
built for it, when the route has the shape the client routes have:

- parameters in the path, the query and the headers, and at most one JSON body model;
- dependencies that take only the request (the bearer check, a service), no ``yield``;
- a ``response_model``, the default response class, no include/exclude options.

Each request on that path is parsed and validated by FastAPI's own functions
(``request_params_to_args``, ``request_body_to_args``, ``serialize_response``), so the values
and the answer are FastAPI's. Anything off the usual path goes to FastAPI's own handler, which
then answers exactly as before: a parameter or a body that does not validate, a body that is
not JSON, dependency overrides, telemetry switched on, or a route of any other shape (planned
as "not lean" once, at start-up). The routes stay ``APIRoute``s, so ``/openapi.json`` is
unchanged. Dependencies run once per request: the plan validates everything it can before
calling any, and a request it hands over has called none.

A planned request is served at the route's ASGI level, not through FastAPI's per-route
wrapper (``request_response``): that wrapper opens two exit stacks, for dependencies with
``yield``, which a plan never has, and catches exceptions with the app's handlers, which the
app's ``ExceptionMiddleware`` applies with the same handlers further out (past the routers
and FastAPI's exit-stack middleware, which pass exceptions through). A route with a body-size
limit of FastAPI's own (``max_body_size``), which that wrapper enforces, is not planned. A
request handed over to FastAPI gets the body the plan read, so it sees the request as sent.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.routing import APIRoute, serialize_response
from fastapi.telemetry import get_telemetry_data
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]
LEAN_ROUTES_STATE = "lean_routes"  # the app.state attribute that switches planning off

# Where FastAPI keeps the route as included (prefix, router dependencies, the app's overrides)
# while it builds that inclusion's handler. Private: without it, every route stays generic.
_INCLUDED = getattr(fastapi.routing, "_effective_route_context_var", None)
# ... and where a request's scope names the inclusion serving it.
_SERVING = getattr(fastapi.routing, "_get_scope_effective_route_context", None)
_PLAN = "_wxpay_lean_plan"  # the attribute that holds a view's plan


class LeanRoute(APIRoute):
    """An ``APIRoute`` whose usual requests skip FastAPI's generic handler (module doc)."""

    planned = False  # whether the last handler built for this route has a plan (tests)

    def get_route_handler(self) -> RouteHandler:
        # FastAPI builds a handler for the route, and one per inclusion of it, each for the
        # view it serves (path, dependencies, overrides). The plan is kept on that view, so it
        # lives as long as the view does (an app's inclusion goes with the app).
        served = _as_included(self)
        plan = plan_for(served) if _SERVING is not None else None
        if served is not None:
            try:
                setattr(served, _PLAN, plan)
            except AttributeError:  # a view that takes no attribute: it stays generic
                plan = None
        self.planned = plan is not None
        return super().get_route_handler()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        plan = self._plan_serving(scope)
        if plan is None:
            await super().handle(scope, receive, send)
        else:
            await plan.serve(scope, receive, send, generic=super().handle)

    def _plan_serving(self, scope: Scope) -> Plan | None:
        """The plan for the view serving this request, if it has one and allows the method
        (FastAPI's own handling answers any other method with 405)."""
        if _SERVING is None:
            return None
        context = _SERVING(scope)
        served = context if context is not None and context.original_route is self else self
        plan: Plan | None = getattr(served, _PLAN, None)
        methods: set[str] | None = served.methods
        return plan if not methods or scope["method"] in methods else None


def _as_included(route: APIRoute) -> Any | None:
    """The route as FastAPI serves it: the inclusion being built, else the route itself."""
    if _INCLUDED is None:
        return None
    included = _INCLUDED.get()
    return included if included is not None and included.original_route is route else route


@dataclass(frozen=True, slots=True)
class Plan:
    endpoint: Callable[..., Awaitable[Any]]
    dependencies: tuple[tuple[str | None, Callable[..., Awaitable[Any]], str], ...]
    body_field: Any | None
    embed_body_fields: bool
    response_field: Any
    status_code: int
    overrides: Any | None  # the app (its ``dependency_overrides``), for included routes
    # The kinds of parameter the endpoint takes, each with where a request keeps them; only
    # those it takes, as Starlette parses the query string or the headers on first access.
    params: tuple[tuple[list[Any], Callable[[Request], Any]], ...]

    async def serve(self, scope: Scope, receive: Receive, send: Send, generic: ASGIApp) -> None:
        """Answer the request, or hand it to ``generic`` (FastAPI's handling of the route,
        which answers to the letter as stock does) with the body as it was sent."""
        request = Request(scope, receive, send)
        values = await self._values(request)
        if isinstance(values, _HandOver):
            await generic(scope, values.replaying(receive), send)
            return
        for name, call, request_name in self.dependencies:
            value = await call(**{request_name: request})
            if name is not None:
                values[name] = value
        response = await self._respond(await self.endpoint(**values))
        await response(scope, receive, send)

    async def _values(self, request: Request) -> dict[str, Any] | _HandOver:
        """The endpoint's parameters, or a hand-over when FastAPI's own handler must answer."""
        if get_telemetry_data() is not None or (
            self.overrides is not None and getattr(self.overrides, "dependency_overrides", None)
        ):
            return _HandOver()
        values: dict[str, Any] = {}
        for fields, source in self.params:
            found, errors = request_params_to_args(fields, source(request))
            if errors:
                return _HandOver()
            values.update(found)
        if self.body_field is not None:
            raw, body = await _json_body(request)
            if body is None:
                return _HandOver(raw)
            found, errors = await request_body_to_args(
                [self.body_field], body, self.embed_body_fields
            )
            if errors:
                return _HandOver(raw)
            values.update(found)
        return values

    async def _respond(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        content = await serialize_response(
            field=self.response_field, response_content=result, dump_json=True
        )
        return Response(
            content=content, media_type="application/json", status_code=self.status_code
        )


@dataclass(frozen=True, slots=True)
class _HandOver:
    """A request for FastAPI's own handler, with the body already read from it, if any."""

    body: bytes | None = None

    def replaying(self, receive: Receive) -> Receive:
        """``receive`` as FastAPI's handler must see it: the read body first, then the rest."""
        if self.body is None:
            return receive
        pending = [{"type": "http.request", "body": self.body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        return replay


async def _json_body(request: Request) -> tuple[bytes | None, Any | None]:
    """``(raw, parsed)``: the body as read (None if it was not) and its value when it is JSON
    as FastAPI reads it (``application/json`` or ``application/*+json``, not empty, well
    formed), else None."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return None, None
    try:
        raw = await request.body()
    except HTTPException:
        raise  # the body limit's 413: FastAPI's handler lets it through too
    except Exception:
        return None, None  # a client gone mid-body: FastAPI's handler answers it, as stock
    if not raw:
        return raw, None
    try:
        return raw, json.loads(raw)
    except (ValueError, RecursionError):  # malformed, not UTF-8, or nested past the C stack
        return raw, None


def plan_for(route: Any | None) -> Plan | None:
    """A plan for ``route`` (an ``APIRoute`` or FastAPI's included view of one), or None if
    its shape is not one the plan knows: FastAPI's generic handler serves it then."""
    if route is None or not _plain_shape(route) or not _enabled(route):
        return None
    dependant: Dependant = route.dependant
    dependencies = tuple(_request_only(sub) for sub in dependant.dependencies)
    if any(dependency is None for dependency in dependencies):
        return None
    calls = [sub.call for sub in dependant.dependencies]
    if len(set(map(id, calls))) != len(calls):
        return None  # one dependency twice: FastAPI's cache would call it once
    supported, body_field = _body_field(route)
    if not supported:
        return None
    assert dependant.call is not None
    return Plan(
        endpoint=dependant.call,
        dependencies=tuple(d for d in dependencies if d is not None),
        body_field=body_field,
        embed_body_fields=bool(route._embed_body_fields),
        response_field=route.response_field,
        status_code=route.status_code or 200,
        overrides=route.dependency_overrides_provider,
        params=tuple(
            (fields, source)
            for fields, source in (
                (dependant.path_params, _path_params),
                (dependant.query_params, _query_params),
                (dependant.header_params, _headers),
            )
            if fields
        ),
    )


def _path_params(request: Request) -> Any:
    return request.path_params


def _query_params(request: Request) -> Any:
    return request.query_params


def _headers(request: Request) -> Any:
    return request.headers


def _enabled(route: Any) -> bool:
    """``WXPAY_LEAN_ROUTES``, as the app that includes the route says (``app.main`` sets
    ``app.state.lean_routes``; FastAPI builds an included route's handler on its first
    request, with the app as the route's dependency-overrides provider)."""
    state = getattr(route.dependency_overrides_provider, "state", None)
    return bool(getattr(state, LEAN_ROUTES_STATE, True))


def _plain_shape(route: Any) -> bool:
    dependant: Dependant = route.dependant
    return (
        dependant.call is not None
        and _is_coroutine(dependant.call)
        and not dependant.cookie_params
        and _no_special_parameters(dependant)
        and route.response_field is not None
        and getattr(route, "max_body_size", None) is None
        and isinstance(route.response_class, DefaultPlaceholder)
        and route.response_model_include is None
        and route.response_model_exclude is None
        and route.response_model_by_alias
        and not route.response_model_exclude_unset
        and not route.response_model_exclude_defaults
        and not route.response_model_exclude_none
        and not route.is_json_stream
        and route.stream_item_field is None
        and _value(route.strict_content_type) is True
    )


def _no_special_parameters(dependant: Dependant) -> bool:
    return not any(
        (
            dependant.request_param_name,
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
        )
    )


def _request_only(
    sub: Dependant,
) -> tuple[str | None, Callable[..., Awaitable[Any]], str] | None:
    """``(name, call, request parameter)`` for a dependency that takes only the request and
    returns a value (no ``yield``, no parameters of its own); None for any other."""
    call = sub.call
    if (
        call is None
        or not _is_coroutine(call)
        or sub.request_param_name is None
        or sub.dependencies
        or sub.path_params
        or sub.query_params
        or sub.header_params
        or sub.cookie_params
        or sub.body_params
        or sub.websocket_param_name
        or sub.http_connection_param_name
        or sub.response_param_name
        or sub.background_tasks_param_name
        or sub.security_scopes_param_name
        or sub.own_oauth_scopes
    ):
        return None
    return sub.name, call, sub.request_param_name


def _body_field(route: Any) -> tuple[bool, Any | None]:
    """``(supported, field)``: no body, or one pydantic model (its field); not a form, not
    several fields."""
    params = route.dependant.body_params
    if not params:
        return True, None
    field = route.body_field
    if len(params) != 1 or field is None or route._embed_body_fields:
        return False, None
    annotation = getattr(field.field_info, "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel), field


def _is_coroutine(call: Callable[..., Any]) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (not a generator)."""
    target = call if inspect.isroutine(call) else type(call).__call__
    return inspect.iscoroutinefunction(target)


def _value(setting: Any) -> Any:
    return setting.value if isinstance(setting, DefaultPlaceholder) else setting

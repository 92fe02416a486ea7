"""JSON logs with a request id (issue 15, operations): the id comes from ``X-Request-ID`` or is
made, goes back in the response, and reaches the log lines of the WeChat calls it causes;
secrets stay redacted in JSON as in text."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.config import DEV_APP_SECRET
from app.logging_setup import (
    MAX_NOTED_CALLS,
    REQUEST_NOTES,
    JsonFormatter,
    RedactSecrets,
    RequestNotes,
    configure_logging,
    note_wechat_call,
)
from app.observe import RequestObserver
from tests.conftest import ClientFactory
from tests.hermetic import hermetic_settings
from tests.plugins.simulator import SimulatorHandle


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above while the test runs, through a handler of its own
    on the root logger (the app's configuration formats and filters it like any other)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


async def test_the_request_id_reaches_the_wechat_calls_it_causes(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, log_output: io.StringIO
) -> None:
    """A 2xx call is reported in the access line of the request that made it."""
    client = await make_client(log_format="json")
    code, _ = await fresh_simulator.login_code()

    first = await client.post(
        "/api/v1/auth/login", json={"code": code}, headers={"X-Request-ID": "req-login-1"}
    )
    other = await client.get("/healthz")

    assert first.status_code == 200 and first.headers["x-request-id"] == "req-login-1"
    made = other.headers["x-request-id"]
    assert len(made) == 32 and made != "req-login-1"
    lines = json_lines(log_output)  # every line is JSON, or this fails
    login, health = [line for line in lines if line["logger"] == "app.access"]
    assert login["request_id"] == "req-login-1" and health["request_id"] == made
    (call,) = login["wechat_calls"]
    assert call["api"] == "code2session" and call["outcome"] == "http_2xx"
    assert call["duration_ms"] >= 0 and "WeChat code2session: http_2xx in" in login["message"]
    assert "wechat_calls" not in health
    assert not [line for line in lines if "wechat_api" in line]  # no second line for it
    assert DEV_APP_SECRET not in log_output.getvalue()  # code2session's URL carries it


async def test_a_failed_wechat_call_gets_a_line_of_its_own_with_the_request_id(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, log_output: io.StringIO
) -> None:
    client = await make_client(log_format="json")
    code, _ = await fresh_simulator.login_code()
    await fresh_simulator.set_fault("upstream_5xx", endpoint="jscode2session")

    response = await client.post(
        "/api/v1/auth/login", json={"code": code}, headers={"X-Request-ID": "req-failing"}
    )

    assert response.status_code == 503
    lines = json_lines(log_output)
    calls = [line for line in lines if line.get("wechat_api") == "code2session"]
    assert calls and all(line["request_id"] == "req-failing" for line in calls)
    assert {line["outcome"] for line in calls} == {"http_5xx"}
    (access,) = [line for line in lines if line["logger"] == "app.access"]
    assert [call["outcome"] for call in access["wechat_calls"]] == ["http_5xx"] * len(calls)


async def test_without_access_lines_each_wechat_call_logs_its_own(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, log_output: io.StringIO
) -> None:
    client = await make_client(log_format="json", access_log=False)
    code, _ = await fresh_simulator.login_code()

    await client.post("/api/v1/auth/login", json={"code": code}, headers={"X-Request-ID": "r-1"})

    (call,) = [line for line in json_lines(log_output) if line.get("wechat_api")]
    assert call["wechat_api"] == "code2session" and call["request_id"] == "r-1"
    assert call["outcome"] == "http_2xx" and call["duration_ms"] >= 0
    assert {"time", "level", "logger", "message"} <= call.keys()


@pytest.mark.parametrize("given", ["x" * 129, "a b", '"},{"level":"ERROR', "é"])
async def test_an_unsafe_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": given.encode()})

    returned = response.headers["x-request-id"]
    assert returned != given and len(returned) == 32


async def test_requests_at_once_keep_their_own_ids(
    make_client: ClientFactory, fresh_simulator: SimulatorHandle, log_output: io.StringIO
) -> None:
    client = await make_client(log_format="json")
    await fresh_simulator.set_latency(50)  # so the logins overlap

    async def login_as(request_id: str) -> None:
        code, _ = await fresh_simulator.login_code()
        headers = {"X-Request-ID": request_id}
        response = await client.post("/api/v1/auth/login", json={"code": code}, headers=headers)
        assert response.status_code == 200

    await asyncio.gather(*(login_as(f"req-{i}") for i in range(5)))

    reported = [
        (line["request_id"], [call["api"] for call in line["wechat_calls"]])
        for line in json_lines(log_output)
        if line["logger"] == "app.access"
    ]
    assert sorted(reported) == [(f"req-{i}", ["code2session"]) for i in range(5)]


def test_json_lines_redact_secrets_in_messages_and_tracebacks(log_output: io.StringIO) -> None:
    configure_logging(hermetic_settings(log_format="json"))
    logger = logging.getLogger("tests.leak")

    logger.warning("calling with secret=%s", DEV_APP_SECRET)
    try:
        raise ValueError(f"upstream quoted secret={DEV_APP_SECRET}")
    except ValueError:
        logger.exception("failed")

    text = log_output.getvalue()
    warning, failure = json_lines(log_output)
    assert DEV_APP_SECRET not in text
    assert warning["message"] == "calling with secret=***"
    assert "secret=***" in failure["exception"] and "ValueError" in failure["exception"]
    assert warning["request_id"] == "-"


def test_text_lines_carry_the_request_id(log_output: io.StringIO) -> None:
    configure_logging(hermetic_settings(log_format="text"))
    log_output.truncate(0)
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "stream", 0) is log_output]
    handler.setFormatter(logging.Formatter("[%(request_id)s] %(message)s"))

    logging.getLogger("tests.text").warning("secret=%s", DEV_APP_SECRET)

    assert log_output.getvalue() == "[-] secret=***\n"


@pytest.mark.parametrize(
    "created",
    [
        0.0,
        1_764_000_000.0,
        1_764_000_000.000001,
        1_764_000_000.999999,
        1_764_000_000.9999996,  # rounds up into the next second
        1_764_000_001.5,
    ],
)
def test_a_json_line_writes_its_time_as_isoformat_does(created: float) -> None:
    formatter = JsonFormatter(RedactSecrets([]))
    earlier = logging.LogRecord("t", logging.INFO, __file__, 1, "first", None, None)
    earlier.created = 1_764_000_000.25  # the same second as some cases, so its text is reused
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "second", None, None)
    record.created = created

    formatter.format(earlier)
    line = json.loads(formatter.format(record))

    assert line["time"] == dt.datetime.fromtimestamp(created, dt.UTC).isoformat(
        timespec="microseconds"
    )


def test_text_lines_can_show_the_source_after_json_lines_were_configured(
    log_output: io.StringIO,
) -> None:
    configure_logging(hermetic_settings(log_format="json"))  # JSON lines skip the source
    configure_logging(hermetic_settings(log_format="text"))
    log_output.truncate(0)
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "stream", 0) is log_output]
    handler.setFormatter(logging.Formatter("%(filename)s:%(threadName)s %(message)s"))

    logging.getLogger("tests.text").warning("here")

    assert log_output.getvalue() == "test_logs.py:MainThread here\n"


async def test_each_request_writes_one_access_line_with_its_id_status_and_time(
    make_client: ClientFactory, log_output: io.StringIO
) -> None:
    client = await make_client(log_format="json")

    await client.get("/healthz", headers={"X-Request-ID": "req-a"})
    await client.get("/api/v1/orders?limit=5", headers={"X-Request-ID": "req-b"})

    lines = [line for line in json_lines(log_output) if line["logger"] == "app.access"]
    assert [
        (line["request_id"], line["method"], line["path"], line["status"]) for line in lines
    ] == [
        ("req-a", "GET", "/healthz", 200),
        ("req-b", "GET", "/api/v1/orders?limit=5", 401),
    ]
    assert all(line["level"] == "INFO" and line["duration_ms"] >= 0 for line in lines)
    # uvicorn's layout, with the time taken.
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ - "GET /healthz HTTP/1\.1" 200 \d+\.\d ms', lines[0]["message"]
    )


def test_uvicorns_access_line_gives_way_to_the_services(log_output: io.StringIO) -> None:
    uvicorn_access = logging.getLogger("uvicorn.access")
    try:
        configure_logging(hermetic_settings())

        assert not uvicorn_access.isEnabledFor(logging.CRITICAL)
    finally:
        uvicorn_access.disabled = False


async def test_no_access_lines_when_switched_off(
    make_client: ClientFactory, log_output: io.StringIO
) -> None:
    client = await make_client(log_format="json", access_log=False)

    assert (await client.get("/healthz")).status_code == 200

    assert [line for line in json_lines(log_output) if line["logger"] == "app.access"] == []


async def test_a_request_the_app_fails_is_logged_as_500(log_output: io.StringIO) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    observed = RequestObserver(failing, timed=False)
    scope: Scope = {
        "type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
        "headers": [], "client": ("10.0.0.7", 4321), "http_version": "1.1", "root_path": "",
    }  # fmt: skip

    with pytest.raises(RuntimeError):
        await observed(scope, _nothing_received, _nothing_sent)

    (line,) = log_output.getvalue().splitlines()
    assert re.fullmatch(r'10\.0\.0\.7:4321 - "POST /x HTTP/1\.1" 500 \d+\.\d ms', line)


async def _nothing_received() -> Message:
    return {"type": "http.disconnect"}


async def _nothing_sent(message: Message) -> None:
    raise AssertionError("the failing app sends nothing")


def test_an_access_line_reports_a_bounded_number_of_calls_and_none_once_written() -> None:
    full, written = RequestNotes(), RequestNotes()
    written.open = False  # its line is out: a call that outlives the request logs its own

    token = REQUEST_NOTES.set(full)
    try:
        noted = [
            note_wechat_call("orderquery", "http_2xx", 1.0) for _ in range(MAX_NOTED_CALLS + 3)
        ]
    finally:
        REQUEST_NOTES.reset(token)
    token = REQUEST_NOTES.set(written)
    try:
        late = note_wechat_call("orderquery", "http_2xx", 1.0)
    finally:
        REQUEST_NOTES.reset(token)

    assert noted == [True] * MAX_NOTED_CALLS + [False] * 3  # the rest log a line each
    assert len(full.wechat_calls) == MAX_NOTED_CALLS
    assert late is False and written.wechat_calls == []
    assert not note_wechat_call("orderquery", "http_2xx", 1.0)  # no request at all

"""Logging configuration with a last-line guard against leaking secrets; text or JSON lines,
each carrying the id of the request that caused it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from app.config import Settings

# The request being served (``X-Request-ID``, see ``app.observe``). A context variable, so the
# WeChat calls and other work a request causes log its id too, while concurrent requests in the
# same process keep theirs apart.
REQUEST_ID: ContextVar[str | None] = ContextVar("wxpay_request_id", default=None)


class RequestNotes:
    """What a request's access line reports of the work the request caused: its calls to
    WeChat. One line per request that tells the whole story (a "canonical log line") costs
    less than a line per call, and reads better. Closed once the line is written: work that
    outlives the request logs its own lines."""

    __slots__ = ("open", "wechat_calls")

    def __init__(self) -> None:
        self.open = True
        self.wechat_calls: list[dict[str, object]] = []


# Set by the access line's writer (``app.observe``) while a request runs, when the line is on.
REQUEST_NOTES: ContextVar[RequestNotes | None] = ContextVar("wxpay_request_notes", default=None)


# An access line reports this many calls at most; a request that makes more (an admin action
# over many orders) logs the rest a line each, so no line grows without bound.
MAX_NOTED_CALLS = 20


def note_wechat_call(api: str, outcome: str, duration_ms: float) -> bool:
    """Notes the call for the current request's access line; False when no line will report
    it (no request, the access line off or already written, or the line full)."""
    notes = REQUEST_NOTES.get()
    if notes is None or not notes.open or len(notes.wechat_calls) >= MAX_NOTED_CALLS:
        return False
    notes.wechat_calls.append({"api": api, "outcome": outcome, "duration_ms": duration_ms})
    return True


# Extra record fields (logging's ``extra=``) a JSON line keeps: a WeChat call's, an access
# line's. Those that hold text are redacted as the message is.
_JSON_EXTRAS = (
    "wechat_api",
    "outcome",
    "method",
    "path",
    "status",
    "duration_ms",
    "wechat_calls",
)
# The service's access line (``app.observe``), which replaces uvicorn's.
ACCESS_LOGGER = "app.access"
_UVICORN_ACCESS_LOGGER = "uvicorn.access"

# Values that are secret whoever logs them: code2session's AppSecret travels in its query
# string (an access line prints the query of a call to the mounted /sim), and its
# answer carries the user's session_key, which no setting knows in advance.
_SECRET_SHAPES = (
    r"(?<=[?&]secret=)[^&\s\"']+",
    r"(?<=[?&]access_token=)[^&\s\"']+",
    r"(?<=session_key=)[^&\s\"']+",
    r"(?<=\"session_key\": \")[^\"]+",
    r"(?<=\"session_key\":\")[^\"]+",
    r"(?<='session_key': ')[^']+",
)
# Every shape above can match only where one of these appears: a cheap test (``in``) that
# lets the regex, ~3 us a string, run only on the rare text that may hold a secret.
_SHAPE_MARKERS = ("secret=", "access_token=", "session_key")
REDACTED = "***"


class RedactSecrets(logging.Filter):
    """Replaces any configured secret, and any value in a secret's place (``secret=…``,
    ``session_key``), that slips into a log record with ``***``.

    The code never logs secrets on purpose; this filter catches the accident (an exception
    message quoting a request, an access line with a query string). Arguments are redacted
    one by one, so a formatter that reads them (uvicorn's access formatter, should its access
    log be switched back on) still works. The text fields a line may show (``_JSON_EXTRAS``)
    are redacted too.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        literals = [re.escape(s) for s in sorted(set(secrets), key=len, reverse=True)]
        self._pattern = re.compile("|".join([*literals, *_SECRET_SHAPES]))
        self._markers = (*set(secrets), *_SHAPE_MARKERS)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        # What any formatter shows of a record's arguments, its message shows: the message
        # alone tells whether there is anything to redact, which on almost every record there
        # is not.
        if self._may_hold(record.getMessage()):
            self._redact_record(record)
        # Fields are shown by a JSON line, or by a text format that names them (``%(path)s``),
        # and a field can hold what a client sent (an access line's path and query).
        fields = record.__dict__
        for name in _JSON_EXTRAS:
            value = fields.get(name)
            if isinstance(value, str):
                fields[name] = self.redact(value)
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self._redact_arg(arg) for key, arg in record.args.items()}
        message = record.getMessage()
        if self._may_hold(message) and self._pattern.search(message):
            # Split between the message and its arguments; only the joined text shows it.
            record.msg, record.args = self.redact(message), None

    def redact(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._may_hold(text) else text

    def _may_hold(self, text: str) -> bool:
        # A loop, not any(): this runs on every record, and any() builds a generator.
        for marker in self._markers:  # noqa: SIM110
            if marker in text:
                return True
        return False

    def _redact_arg(self, arg: Any) -> Any:
        if isinstance(arg, str):
            return self.redact(arg)
        if isinstance(arg, int | float | type(None)):
            return arg
        text = str(arg)
        return self.redact(text) if self._may_hold(text) and self._pattern.search(text) else arg


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or ``-``) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. The message and the fields were redacted by ``RedactSecrets``
    (a handler filter, run first); a traceback is formatted here, so it is redacted here."""

    def __init__(self, redactor: RedactSecrets) -> None:
        super().__init__()
        self._redactor = redactor
        self._second = (-1, "")  # the last whole second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        fields = record.__dict__
        for name in _JSON_EXTRAS:
            if name in fields:
                entry[name] = fields[name]  # redacted by the filter, as the message was
        if record.exc_info:
            entry["exception"] = self._redactor.redact(self.formatException(record.exc_info))
        return _JSON_LINE.encode(entry)

    def _utc_time(self, created: float) -> str:
        """``created`` in UTC as ``isoformat(timespec="microseconds")`` writes it (always
        six digits of microseconds); the date and time of day are made once a second (a line
        costs a few microseconds less, and lines come in hundreds a second)."""
        whole = int(created)
        micro = round((created - whole) * 1_000_000)  # rounded as datetime rounds it
        if micro == 1_000_000:
            whole, micro = whole + 1, 0
        second, text = self._second
        if second != whole:
            moment = dt.datetime.fromtimestamp(whole, dt.UTC)
            text = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{micro:06d}+00:00"


# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_JSON_LINE = json.JSONEncoder(ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Settings) -> None:
    secrets = [
        value.get_secret_value()
        for value in (
            settings.app_secret,
            settings.api_key,
            settings.secret_key,
            settings.admin_token,
            settings.api_v3_key,
            settings.metrics_token,
        )
        if value is not None and len(value.get_secret_value()) >= 8
    ]
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT)
    # httpx logs every request URL at INFO, and code2session's URL carries the AppSecret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The service writes its own access line (app.observe): uvicorn's would repeat it, without
    # the request id or the time taken, whatever flags uvicorn was started with.
    logging.getLogger(_UVICORN_ACCESS_LOGGER).disabled = True
    redactor = RedactSecrets(secrets)
    json_lines = JsonFormatter(redactor) if settings.log_format == "json" else None
    for handler in _every_handler():
        handler.filters = [f for f in handler.filters if not isinstance(f, _OURS)]
        # The request id first: a filter may rewrite the message, never the id.
        handler.addFilter(RequestIdFilter())
        handler.addFilter(redactor)
        if json_lines is not None:
            handler.setFormatter(json_lines)
    _find_source_and_thread(json_lines is None)


# logging's defaults, as imported (``_srcfile`` is how it finds a record's caller).
_DEFAULTS = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)


def _find_source_and_thread(find: bool) -> None:
    """Whether records carry their source file, line, thread and process. A JSON line shows
    none of them, so logging need not find them for every record (the logging HOWTO's
    "Optimization" switches; finding the caller alone walks the stack, about a fifth of a
    line's cost here; ``stack_info=True`` is dropped with them, and JSON lines never showed
    it). Text lines keep them, for any format a developer puts on them."""
    source, threads, processes, multiprocessing = _DEFAULTS if find else (None, False, False, False)
    logging._srcfile = source
    logging.logThreads = threads
    logging.logProcesses = processes
    logging.logMultiprocessing = multiprocessing


_OURS = (RedactSecrets, RequestIdFilter)


def _every_handler() -> Iterator[logging.Handler]:
    """The root's handlers and those of every logger that has its own (uvicorn's access and
    error logs do not propagate to the root, so a filter on the root alone misses them)."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    seen: set[int] = set()
    for logger in loggers:
        for handler in logger.handlers:
            if id(handler) not in seen:
                seen.add(id(handler))
                yield handler

"""Logging configuration with a last-line guard against leaking secrets; text or JSON lines,
each carrying the id of the request that caused it."""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextvars import ContextVar

from app.config import Settings

# The request being served (``X-Request-ID``, see ``app.observe``). A context variable, so the
# WeChat calls and other work a request causes log its id too, while concurrent requests in the
# same process keep theirs apart.
REQUEST_ID: ContextVar[str | None] = ContextVar("wxpay_request_id", default=None)

# uvicorn's own loggers, which do not propagate to the root logger's handlers.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")
# Extra record fields (logging's ``extra=``) a JSON line keeps.
_JSON_EXTRAS = ("wechat_api", "outcome", "duration_ms")


class RedactSecrets(logging.Filter):
    """Replaces any configured secret that slips into a log record with ``***``.

    The code never logs secrets on purpose; this filter catches the accident (an exception
    message quoting a request, say).
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or ``-``) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. The message was redacted by ``RedactSecrets`` (a handler
    filter, run first); a traceback is formatted here, so it is redacted here."""

    def __init__(self, redactor: RedactSecrets) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        entry |= {name: record.__dict__[name] for name in _JSON_EXTRAS if name in record.__dict__}
        if record.exc_info:
            entry["exception"] = self._redactor.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(settings: Settings) -> None:
    secrets = [
        settings.app_secret.get_secret_value(),
        settings.api_key.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.admin_token.get_secret_value(),
    ]
    if settings.metrics_token is not None:
        secrets.append(settings.metrics_token.get_secret_value())
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=settings.log_level, format=TEXT_FORMAT)
    # httpx logs every request URL at INFO, and code2session's URL carries the AppSecret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redactor = RedactSecrets(secrets)
    json_lines = JsonFormatter(redactor) if settings.log_format == "json" else None
    for handler in _handlers():
        handler.filters = [f for f in handler.filters if not isinstance(f, _OURS)]
        # The request id first: a filter may rewrite the message, never the id.
        handler.addFilter(RequestIdFilter())
        handler.addFilter(redactor)
        if json_lines is not None:
            handler.setFormatter(json_lines)


_OURS = (RedactSecrets, RequestIdFilter)


def _handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *map(logging.getLogger, _UVICORN_LOGGERS)]
    return [handler for logger in loggers for handler in logger.handlers]

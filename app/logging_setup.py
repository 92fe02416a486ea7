"""Logging configuration with a last-line guard against leaking secrets."""

from __future__ import annotations

import logging

from app.config import Settings


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


def configure_logging(settings: Settings) -> None:
    secrets = [
        settings.app_secret.get_secret_value(),
        settings.api_key.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.admin_token.get_secret_value(),
    ]
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    # httpx logs every request URL at INFO, and code2session's URL carries the AppSecret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redactor = RedactSecrets(secrets)
    for handler in root.handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactSecrets)]
        handler.addFilter(redactor)

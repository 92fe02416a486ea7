"""The redaction filter on every log handler (issue 15, item 4). The full dev flow whose every
log line is read back is in ``tests/test_dev_server.py``."""

from __future__ import annotations

import logging

import pytest

from app.config import DEV_API_KEY, DEV_APP_SECRET
from app.logging_setup import RedactSecrets


@pytest.mark.parametrize(
    ("msg", "args", "shown"),
    [
        ('%s - "%s %s HTTP/%s" %d', ("1.2.3.4", "GET", "/s?secret=abc&x=1", "1.1", 200), "***&x=1"),
        ("answer %s", ('{"session_key": "k3y=="}',), '"session_key": "***"'),
        ("key is %s", (DEV_API_KEY,), "key is ***"),
        ("prefix " + DEV_APP_SECRET[:10] + "%s", (DEV_APP_SECRET[10:],), "prefix ***"),
    ],
)
def test_the_filter_redacts_arguments_and_keeps_their_shape(
    msg: str, args: tuple[object, ...], shown: str
) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)

    RedactSecrets([DEV_API_KEY, DEV_APP_SECRET]).filter(record)

    assert shown in record.getMessage()
    assert "abc" not in record.getMessage() and DEV_APP_SECRET not in record.getMessage()


@pytest.mark.parametrize("format_", ["%(message)s", "%(path)s", "%(method)s %(path)s"])
def test_the_filter_redacts_the_fields_a_text_format_may_show(format_: str) -> None:
    # The access line carries its path and query as a field too (app.observe): a text format
    # that names the field shows it, so the filter redacts fields as it redacts the message.
    target = f"/sim/sns/jscode2session?appid=wx1&secret={DEV_APP_SECRET}&js_code=c"
    record = logging.LogRecord("app.access", logging.INFO, __file__, 1, f"GET {target}", (), None)
    record.__dict__.update(method="GET", path=target, status=200)
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecrets([DEV_APP_SECRET]))
    handler.setFormatter(logging.Formatter(format_))

    assert handler.filter(record)
    shown = handler.format(record)

    assert DEV_APP_SECRET not in shown
    assert "secret=***&js_code=c" in shown

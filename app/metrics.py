"""Prometheus metrics, every name ``wxpay_*``; served at ``/metrics`` (``app.observe``).

Counters and histograms are recorded where things happen (a request, a notify verdict, a call
to WeChat, a sweep pass). With ``PROMETHEUS_MULTIPROC_DIR`` set before the process starts,
prometheus-client keeps them in files in that directory and a scrape of any worker adds up
every worker's figures (``uvicorn --workers N``); the directory must be emptied before the
workers start (the image's entrypoint does it). Without it, figures are this process's only.

Figures that are the state of the database (refunds by status) are read at scrape time: every
worker would report the same rows, so they are not counted per process.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.events.repository import EndpointBacklog

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "<unmatched>"  # one label for every path no route matched: bounded

# Our own registry, so a scrape shows our figures and nothing a library registered.
REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 5 ms (a cached read) to 10 s (WeChat's slowest answers, our read
# timeout).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Histogram(
    "wxpay_http_request_duration_seconds",
    "Requests served, by route template and status",
    ["method", "route", "status"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
NOTIFY_VERDICTS = Counter(
    "wxpay_notify_verdicts_total",
    "Notifies received from WeChat, by kind (payment, refund), API version and verdict",
    ["kind", "api_version", "verdict"],
    registry=REGISTRY,
)
WECHAT_REQUESTS = Histogram(
    "wxpay_wechat_request_duration_seconds",
    "HTTP exchanges with WeChat (each attempt), by API and outcome",
    ["api", "outcome"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
GATEWAY_CALLS = Histogram(
    "wxpay_gateway_call_duration_seconds",
    "Payment-gateway operations (retries included), by API version, operation and outcome",
    ["api_version", "operation", "outcome"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
SESSION_LOOKUPS = Counter(
    "wxpay_session_lookups_total",
    "Bearer-token checks, by where the session came from: hit (this process's cache), miss "
    "(the database), off (the database: the cache is off, or not live yet)",
    ["result"],
    registry=REGISTRY,
)
SWEEP_PASSES = Counter(
    "wxpay_sweep_passes_total", "Sweep passes, by result (ok, error)", ["result"], registry=REGISTRY
)
SWEEP_ORDERS = Counter(
    "wxpay_sweep_orders_total",
    "Orders the sweep settled, by the order's status after the pass (ERROR: WeChat failed)",
    ["status"],
    registry=REGISTRY,
)
SWEEP_REFUNDS = Counter(
    "wxpay_sweep_refunds_total",
    "Refunds the sweep asked WeChat about, by the refund's status after the pass",
    ["status"],
    registry=REGISTRY,
)


_Labelled = TypeVar("_Labelled", Counter, Histogram)


def child(metric: _Labelled, *labels: str) -> _Labelled:
    """``metric.labels(*labels)``, looked up once per label set: ``labels()`` takes a lock on
    every call. For label sets that are bounded (fixed names, a few versions), never for
    anything a caller chooses."""
    return cast(_Labelled, _cached_child(metric, *labels))


@functools.cache
def _cached_child(metric: Counter | Histogram, *labels: str) -> Counter | Histogram:
    # Kept apart from ``child``: functools.cache on a generic function loses its types.
    return metric.labels(*labels)


# Figures read from the database at scrape time are built by functions like these and gathered
# by ``app.observe._state``.
def refund_states(counts: dict[str, int]) -> Metric:
    """``wxpay_refunds{status}``: the refunds in the database, by status."""
    family = GaugeMetricFamily(
        "wxpay_refunds", "Refunds in the database, by status", None, ["status"]
    )
    for status, count in sorted(counts.items()):
        family.add_metric([status], count)
    return family


def webhook_backlog(endpoints: Iterable[EndpointBacklog], now: dt.datetime) -> list[Metric]:
    """The webhook lag, by endpoint id: what is undelivered, the age of the oldest of it (0
    when nothing is owed), and whether the endpoint is enabled (a disabled one keeps what it
    is owed, and its lag grows until it is enabled again)."""
    labels = ["endpoint"]
    pending = GaugeMetricFamily(
        "wxpay_webhook_pending_deliveries", "Events not yet delivered, by endpoint", None, labels
    )
    oldest = GaugeMetricFamily(
        "wxpay_webhook_oldest_pending_seconds",
        "Age of the oldest event not yet delivered, by endpoint (0: none owed)",
        None,
        labels,
    )
    enabled = GaugeMetricFamily(
        "wxpay_webhook_endpoint_enabled", "1 if the endpoint is enabled, else 0", None, labels
    )
    for endpoint in endpoints:
        label = [str(endpoint.endpoint_id)]
        since = endpoint.oldest_pending_since
        pending.add_metric(label, endpoint.pending)
        oldest.add_metric(label, 0.0 if since is None else max((now - since).total_seconds(), 0))
        enabled.add_metric(label, 1 if endpoint.enabled else 0)
    return [pending, oldest, enabled]


def database_up(up: bool) -> Metric:
    family = GaugeMetricFamily("wxpay_database_up", "Whether /metrics could read the database")
    family.add_metric([], 1 if up else 0)
    return family


class _Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def render(state: Iterable[Metric] = ()) -> bytes:
    """The exposition text: this process's figures (or every worker's, in multiprocess mode)
    and ``state`` read from the database for this scrape."""
    registry = REGISTRY
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    text = generate_latest(registry)
    extra = list(state)
    if extra:
        scrape = CollectorRegistry()
        scrape.register(_Fixed(extra))
        text += generate_latest(scrape)
    return text

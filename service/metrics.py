"""Every Prometheus metric of the service, in one place, all prefixed `duet_`.

Names and labels are a contract with the dashboard and the load tests: change them only together.
With several uvicorn workers, `PROMETHEUS_MULTIPROC_DIR` must be set before this module is
imported (`python -m service` does it); `render()` then aggregates every worker's files.
"""

from __future__ import annotations

import os
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# The `_created` series only add noise to every scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
STAGE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1,
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "duet_http_requests_total", "HTTP requests answered.", ["route", "method", "status", "arm"]
)
HTTP_DURATION = Histogram(
    "duet_http_request_duration_seconds",
    "HTTP request latency, first byte in to last byte out.",
    ["route", "arm"],
    buckets=REQUEST_BUCKETS,
)
STAGE_DURATION = Histogram(
    "duet_stage_duration_seconds",
    "Latency of one stage of the recommend path.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "duet_cache_requests_total", "User-embedding cache look-ups.", ["layer", "result"]
)
FALLBACKS = Counter("duet_fallbacks_total", "Answers not fully personalised.", ["reason"])
EVENTS_INGESTED = Counter("duet_events_ingested_total", "Events accepted (202).", ["type"])
EVENTS_REJECTED = Counter("duet_events_rejected_total", "Events refused.", ["reason"])
SEEN_DROPPED = Counter(
    "duet_seen_dropped_total",
    "Oldest seen-set items dropped past DUET_SEEN_MAX_ITEMS (they may be recommended again).",
)
RELATED_REQUESTS = Counter(
    "duet_related_requests_total",
    "Item-to-item answers (similar, complementary) by endpoint (route template) and relation.",
    ["endpoint", "relation"],
)
UNKNOWN_IDS = Counter("duet_unknown_ids_total", "Ids the serving bundle does not know.", ["kind"])
BUNDLE_INFO = Gauge(
    "duet_bundle_info", "1 per arm for the bundle it serves.", ["arm", "version"],
    multiprocess_mode="max",
)  # fmt: skip
REDIS_BREAKER_OPEN = Gauge(
    "duet_redis_breaker_open", "1 while the Redis circuit breaker is open.",
    multiprocess_mode="livemax",
)  # fmt: skip
SHED = Counter(
    "duet_shed_total",
    "Requests refused at once (503): the worker at DUET_MAX_INFLIGHT or DUET_MAX_QUEUE_MS.",
    ["reason"],
)
INFLIGHT = Gauge("duet_inflight_requests", "Requests being served.", multiprocess_mode="livesum")
EXPERIMENT_ASSIGNMENTS = Counter(
    "duet_experiment_assignments_total", "Recommend answers by experiment arm.",
    ["experiment", "arm"],
)  # fmt: skip
EXPERIMENT_EXPOSURES = Counter(
    "duet_experiment_exposures_total", "Exposures recorded by experiment arm.",
    ["experiment", "arm"],
)  # fmt: skip
EXPERIMENT_CLICKS = Counter(
    "duet_experiment_clicks_total", "Events attributed as clicks to an experiment arm.",
    ["experiment", "arm"],
)  # fmt: skip
EXPERIMENT_TRACKING_ERRORS = Counter(
    "duet_experiment_tracking_errors_total",
    "Exposures or clicks not recorded because the store was unavailable.", ["operation"],
)  # fmt: skip
BUNDLE_RELOADS = Counter("duet_bundle_reloads_total", "Bundle reloads by outcome.", ["outcome"])
PAGE_MEMO = Counter(
    "duet_page_memo_requests_total",
    "Plain recommends (no exclusions, filters or request history) by page-memo outcome.",
    ["result"],
)
CATALOG_CHANGES = Counter(
    "duet_catalog_changes_total", "Live-catalog changes accepted by the admin API.", ["op"]
)
CATALOG_UNKNOWN_GENRES = Counter(
    "duet_catalog_unknown_genres_total",
    "Genres of upserted items outside the bundle's vocabulary (accepted, not embedded).",
)
CATALOG_CATCH_UP_FAILED = Counter(
    "duet_catalog_catch_up_failures_total",
    "Requests answered without catching up with a newer catalog version (Redis refused).",
)

# Children resolved once: `.labels()` costs microseconds on the hot path.
STAGE_HISTORY = STAGE_DURATION.labels("history_fetch")
STAGE_CACHE = STAGE_DURATION.labels("cache")
STAGE_ENCODE = STAGE_DURATION.labels("encode")
STAGE_SEARCH = STAGE_DURATION.labels("search")
STAGE_FILTER = STAGE_DURATION.labels("filter")
PAGE_MEMO_HITS = PAGE_MEMO.labels("hit")
RELATED_MEMO_HITS = Counter(
    "duet_related_memo_hits_total",
    "Item-to-item answers (similar, complementary, retrieve by item) reused from the arm's memo.",
)
SHED_BY_REASON = {reason: SHED.labels(reason) for reason in ("inflight", "queue")}
# Series that only move when something goes wrong exist at 0 from the start, so a dashboard
# query over them answers 0 on a healthy service instead of "no data".
for _counter, _labels in (
    (EVENTS_REJECTED, ("store_unavailable",)),
    (EXPERIMENT_TRACKING_ERRORS, ("exposure", "click")),
    (BUNDLE_RELOADS, ("swapped", "rejected")),
    (FALLBACKS, ("store_unavailable", "cold_start")),
    (CATALOG_CHANGES, ("upsert", "delete", "available")),
    (FALLBACKS, ("no_dual_embeddings", "item_without_dual_embedding")),
):
    for _label in _labels:
        _counter.labels(_label)


@cache
def cache_counter(layer: str, result: str) -> Counter:
    return CACHE_REQUESTS.labels(layer, result)


@cache
def related_counter(endpoint: str, relation: str) -> Counter:
    return RELATED_REQUESTS.labels(endpoint, relation)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> tuple[bytes, str]:
    """The exposition text: this process's registry, or every worker's in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

"""docker/prometheus.yml and the Grafana provisioning: they point at each other and at Duet."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.ops.conftest import REPO

GRAFANA = REPO / "docker" / "grafana"
# The metric names of the service contract (issue 3 and 4), which the dashboard is built on.
CONTRACT = {
    "duet_http_requests_total", "duet_http_request_duration_seconds",
    "duet_stage_duration_seconds", "duet_cache_requests_total", "duet_fallbacks_total",
    "duet_events_ingested_total", "duet_events_rejected_total", "duet_unknown_ids_total",
    "duet_bundle_info", "duet_redis_breaker_open", "duet_inflight_requests",
    "duet_experiment_assignments_total", "duet_experiment_exposures_total",
    "duet_experiment_clicks_total",
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "duet.json").read_text())
    return loaded


def dashboard_metrics() -> set[str]:
    """Base metric names the dashboard queries (histogram suffixes folded)."""
    names = set()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\bduet_[a-z_]+", target["expr"]):
                names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def test_prometheus_scrapes_the_service_in_the_compose_network() -> None:
    config = yaml.safe_load((REPO / "docker" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "duet"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["service:8000"]


def test_grafana_datasource_is_the_prometheus_the_dashboard_names() -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "duet.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_dashboard_covers_every_contract_metric() -> None:
    assert dashboard_metrics() >= CONTRACT


def test_dashboard_queries_only_metrics_the_service_declares() -> None:
    import service.metrics  # noqa: F401 (registers the service's collectors)

    declared = set(re.findall(r"^# TYPE (duet_[a-z_]+) ", generate_latest(REGISTRY).decode(), re.M))
    assert dashboard_metrics() <= declared, dashboard_metrics() - declared


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for needle in (
        "requests/s",
        "latency by route",
        "latency by arm",
        "cache hit ratio",
        "fallbacks",
        "errors",
        "events",
        "bundle versions",
        "by arm",
    ):
        assert needle in titles, needle
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, route)" in exprs
        assert f"histogram_quantile({q}, sum by (le, arm)" in exprs


def test_dashboard_panels_do_not_overlap() -> None:
    cells = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
        assert g["x"] + g["w"] <= 24

"""docker-compose.yml: validated by a compose client, and read for what the stack promises."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from typing import Any

import pytest

from tests.ops.conftest import REPO, compose_file

LONG_RUNNING = ("redis", "service", "prometheus", "grafana")


def compose_client() -> list[str]:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail("no compose client (`docker compose` or `docker-compose`): run `make ops-tools`")


def test_a_compose_client_validates_the_file() -> None:
    done = subprocess.run(
        [*compose_client(), "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_stack_has_its_five_services() -> None:
    assert set(compose_file()["services"]) == {
        "redis", "trainer", "service", "prometheus", "grafana"
    }  # fmt: skip


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name: str) -> None:
    check = compose_file()["services"][name]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert check["interval"] and check["retries"] >= 3


def test_the_service_starts_after_redis_is_healthy_and_the_trainer_completed() -> None:
    services = compose_file()["services"]
    assert services["service"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"},
    }
    assert services["prometheus"]["depends_on"]["service"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["trainer"]["restart"] == "no"


def test_trainer_and_service_share_the_bundle_volume_read_only_for_the_service() -> None:
    services = compose_file()["services"]
    assert "bundles:/bundles" in services["trainer"]["volumes"]
    assert "bundles:/bundles:ro" in services["service"]["volumes"]
    bundle = services["trainer"]["environment"]["DUET_BUNDLE"]
    assert services["service"]["environment"]["DUET_BUNDLE"] == bundle
    assert bundle.startswith("/bundles/")


def test_the_service_talks_to_the_compose_redis() -> None:
    env = compose_file()["services"]["service"]["environment"]
    assert env["DUET_REDIS_URL"] == "redis://redis:6379/0"
    assert env["DUET_HOST"] == "0.0.0.0"
    # Passed through from the host shell only when set: no weak default token in the file.
    assert env["DUET_ADMIN_TOKEN"] is None


def test_published_ports_are_loopback_only() -> None:
    for name, spec in compose_file()["services"].items():
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_redis_evicts_only_cache_keys_and_keeps_events() -> None:
    command: list[Any] = compose_file()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_grafana_serves_anonymous_viewers_with_the_dashboard_provisioned() -> None:
    grafana = compose_file()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(
        mounts["./docker/grafana/dashboards"] + "/"
    )
    for host_path in mounts:
        if host_path.startswith("./"):
            assert (REPO / host_path).exists(), host_path


def test_prometheus_mounts_the_scrape_config_of_the_repo() -> None:
    volumes = compose_file()["services"]["prometheus"]["volumes"]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


def test_the_demo_experiment_splits_the_demo_bundle_between_two_arms() -> None:
    service = compose_file()["services"]["service"]
    path = service["environment"]["DUET_EXPERIMENTS"]
    assert f"./docker/experiments.toml:{path}:ro" in service["volumes"]
    experiment = tomllib.loads((REPO / "docker" / "experiments.toml").read_text())
    assert [a["name"] for a in experiment["arms"]] == ["two_tower", "popularity_blend"]
    assert {a["bundle"] for a in experiment["arms"]} == {service["environment"]["DUET_BUNDLE"]}

"""The Kubernetes manifests: every rendered object passes `kubernetes-validate --strict` against
the stated Kubernetes version, the checked-in render matches `kubectl kustomize`, and the
Deployment keeps the properties the service relies on (probes, drain, non-root)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31.0"  # the version README's "Production deployment" states
OVERLAYS = ["staging", "production"]
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def rendered(overlay: str) -> list[dict[str, Any]]:
    text = (ROOT / "rendered" / f"{overlay}.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checked_in_render_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the checked-in render is validated alone")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out == (ROOT / "rendered" / f"{overlay}.yaml").read_text(), (
        f"re-render: kubectl kustomize deploy/kubernetes/overlays/{overlay} "
        f"> deploy/kubernetes/rendered/{overlay}.yaml"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_strict_validation(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            endpoint = obj["spec"]["endpoints"][0]
            assert endpoint == {**endpoint, "port": "http", "path": "/metrics"}
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = by_kind(rendered("production"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_probes_drain_and_security(overlay: str) -> None:
    objects = rendered(overlay)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * 30  # 1M-item load ~30 s
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_seconds = 10  # timeout_graceful_shutdown in service/__main__.py
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain_seconds
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "memory" in container["resources"]["limits"]
    assert "cpu" in container["resources"]["requests"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["DUET_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "duet-admin"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["bundles"]["readOnly"] is True
    config_maps = [o for o in objects if o["kind"] == "ConfigMap"]
    experiments = [c for c in config_maps if "experiments.toml" in c.get("data", {})]
    assert len(experiments) == 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["experiments"]["configMap"]["name"] == experiments[0]["metadata"]["name"]


def test_bundle_delivery_per_overlay() -> None:
    staging = by_kind(rendered("staging"), "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in staging["initContainers"]] == ["fetch-bundle"]
    production = by_kind(rendered("production"), "Deployment")["spec"]["template"]["spec"]
    assert not production.get("initContainers")
    volumes = {v["name"]: v for v in production["volumes"]}
    assert volumes["bundles"] == {
        "name": "bundles",
        "persistentVolumeClaim": {"claimName": "duet-bundles", "readOnly": True},
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_pod_labels(overlay: str) -> None:
    objects = rendered(overlay)
    labels = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = by_kind(objects, kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == by_kind(objects, "Deployment")["metadata"]["name"]
    assert hpa["minReplicas"] >= 1

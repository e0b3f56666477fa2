"""deploy/: the Kubernetes manifests validated offline against the Kubernetes API schemas
(kubernetes-validate ships them), the grace period outlasting the drain everywhere (manifests,
compose.yaml), service links off, and the autoscaling objects pointing at what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from redbatch.config import ENV_NAMES, WorkerConfig, check_environment

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes release still commonly run, and the newest the package knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources: their schemas come with KEDA and the Prometheus Operator, not Kubernetes.
CUSTOM = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
# Seconds a pod needs after its drain: hand back read-ahead entries, leave the group, exit.
MARGIN_S = 10


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def configmap() -> dict[str, str]:
    (cm,) = by_kind("ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_are_valid_kubernetes(version: str) -> None:
    checked = 0
    for name, doc in documents():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 7  # ConfigMap, 2 Deployments, 2 Services, 2 PDBs


def test_the_configmap_holds_valid_settings() -> None:
    data = configmap()
    check_environment(data)  # every key a REDBATCH_* setting
    config = WorkerConfig.from_env(data)
    assert config.metrics_port == 9100


def test_the_grace_period_outlasts_the_drain() -> None:
    drain = int(configmap().get(ENV_NAMES["drain_timeout_s"], WorkerConfig.drain_timeout_s))
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
        assert grace >= drain + MARGIN_S, deployment["metadata"]["name"]
    # A pod that does not say so gets Kubernetes' 30 s: the default drain must fit in it too.
    assert WorkerConfig.drain_timeout_s + MARGIN_S <= 30


def test_compose_grace_period_outlasts_the_drain() -> None:
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    drain = int(env.get(ENV_NAMES["drain_timeout_s"]) or WorkerConfig.drain_timeout_s)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace)
    assert int(grace[:-1]) >= drain + MARGIN_S


def test_pods_turn_service_links_off_and_probe_the_metrics_port() -> None:
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False
        (container,) = pod["containers"]
        assert [p["containerPort"] for p in container["ports"]] == [9100]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    scheduler = next(
        d for d in by_kind("Deployment") if d["metadata"]["name"].endswith("scheduler")
    )
    assert scheduler["spec"]["replicas"] == 2


def test_worker_pods_ask_for_a_gpu() -> None:
    worker = next(d for d in by_kind("Deployment") if d["metadata"]["name"].endswith("worker"))
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_autoscaling_and_monitoring_objects_point_at_what_exists() -> None:
    deployments = {d["metadata"]["name"] for d in by_kind("Deployment")}
    records = set(
        re.findall(r"record: (\S+)", (DEPLOY / "prometheus/recording-rules.yaml").read_text())
    )
    kinds = set()
    for scaled in by_kind("ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
        for trigger in scaled["spec"]["triggers"]:
            kinds.add(trigger["type"])
            meta = trigger["metadata"]
            if trigger["type"] == "prometheus":
                used = set(re.findall(r"redbatch:[a-z0-9_:]+", meta["query"]))
                assert used and used <= records, meta["query"]
                float(meta["threshold"])
            else:
                assert meta["consumerGroup"] == "workers" and int(meta["lagCount"]) > 0
                assert re.fullmatch(r"rb:\{embed\}:stream(:high|:low)?", meta["stream"])
    assert kinds == {"prometheus", "redis-streams"}
    (monitor,) = by_kind("ServiceMonitor")
    labels = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in by_kind("Service") if labels.items() <= s["metadata"]["labels"].items()]
    assert len(services) == 2
    for service in services:
        assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


def test_the_image_healthcheck_asks_for_this_containers_worker_only() -> None:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("HEALTHCHECK")]
    assert line.endswith('CMD ["redbatch", "worker", "--check"]')  # no namespace-wide scan
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    test = compose["services"]["scheduler"]["healthcheck"]["test"]
    assert test == ["CMD", "redbatch", "scheduler", "--check"]

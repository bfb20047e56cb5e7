"""`nexus deploy k8s`: a release as plain Kubernetes objects, built as dicts and validated before use.

The objects, in apply order (:func:`render_k8s`): ServiceAccount, NetworkPolicy, Service, Deployment
(:mod:`nexus.deploy.k8s_pod`), PodDisruptionBudget, HorizontalPodAutoscaler and PodMonitor (the
autoscaling ones, :mod:`nexus.deploy.autoscale`), then any extra objects.
A rollout to a new release is a re-render: the pod template carries the release's id, so
`kubectl apply -k` changes it and the Deployment rolls; the selector carries only the app's name, so it
never changes (a Deployment's selector is immutable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from nexus.deploy.autoscale import AutoscaleSettings, render_autoscaling
from nexus.deploy.k8s_pod import deployment
from nexus.deploy.k8s_settings import K8sSettings
from nexus.deploy.labels import PORTS
from nexus.release import Release

__all__ = ["K8sSettings", "network_policy", "pod_disruption_budget", "render_k8s", "service", "service_account"]


def service_account(settings: K8sSettings) -> dict[str, Any]:
    """The pods' identity: no API token mounted (Triton never calls the API server); annotate it for IRSA
    or Workload Identity to give the pods the bucket without a credentials Secret."""
    metadata = settings.metadata()
    if settings.service_account_annotations:
        metadata["annotations"] = dict(settings.service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata, "automountServiceAccountToken": False}


def service(settings: K8sSettings) -> dict[str, Any]:
    """HTTP, gRPC and metrics of the ready pods, inside the cluster (ClusterIP: put an Ingress or a
    Gateway in front for clients outside)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": settings.metadata(),
        "spec": {
            "type": "ClusterIP",
            "selector": settings.selector(),
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in PORTS.items()],
        },
    }


def pod_disruption_budget(settings: K8sSettings) -> dict[str, Any]:
    """Voluntary disruptions (node drains, upgrades) take one pod at a time; a pod that is not ready
    (stuck loading, say) may always be evicted, so it never blocks a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": settings.metadata(),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": settings.selector()},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def network_policy(settings: K8sSettings) -> dict[str, Any]:
    """Who may connect to the pods: anyone to HTTP and gRPC, only the namespace itself (and
    ``settings.metrics_namespaces``, where Prometheus runs) to metrics.

    A NetworkPolicy works on ports (L4), not paths: the model-repository API (load, unload, index) is on
    the same HTTP and gRPC ports as inference, so it cannot be kept inside the namespace here. Triton
    refuses it without the `nexus-api-key` header (``--http-restricted-api``,
    ``--grpc-restricted-protocol``), whose value only the API-key Secret holds. The policy takes effect
    only where the cluster's network plugin enforces NetworkPolicy.
    """
    metrics_from: list[dict[str, Any]] = [{"podSelector": {}}]
    metrics_from += [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in settings.metrics_namespaces
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": settings.metadata(),
        "spec": {
            "podSelector": {"matchLabels": settings.selector()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]},
                {"from": metrics_from, "ports": [{"port": "metrics", "protocol": "TCP"}]},
            ],
        },
    }


def render_k8s(
    release: Release,
    settings: K8sSettings | None = None,
    extra_objects: Iterable[Mapping[str, Any]] = (),
    autoscale: AutoscaleSettings | None = None,
) -> list[dict[str, Any]]:
    """Every object of the deployment, in apply order, ``extra_objects`` last (not validated here:
    :func:`nexus.deploy.kustomize.write_base` validates all of them).

    With ``autoscale``, the HorizontalPodAutoscaler and the monitor that feeds it
    (:mod:`nexus.deploy.autoscale`) come after the PodDisruptionBudget, and the Deployment has no
    ``replicas``: the HPA owns the count, and an apply that set it would undo the HPA's scaling
    (Kubernetes' HPA docs, "Migrating Deployments and StatefulSets to horizontal autoscaling").

    Raises:
        DeployError: the release is in a local folder (pods cannot read it).
    """
    settings = settings or K8sSettings()
    pod = deployment(release, settings)
    scaling: list[dict[str, Any]] = []
    if autoscale is not None:
        del pod["spec"]["replicas"]
        scaling = render_autoscaling(release, replace(autoscale, name=settings.name))
    objects = [
        service_account(settings),
        network_policy(settings),
        service(settings),
        pod,
        pod_disruption_budget(settings),
        *scaling,
        *(dict(obj) for obj in extra_objects),
    ]
    if settings.namespace:
        for obj in objects:
            obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": settings.namespace, **obj["metadata"]}
    return objects

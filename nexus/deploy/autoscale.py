"""Autoscaling on Triton's queue time per request: the HPA, the monitor that scrapes it, the adapter rule.

Three parts feed one number (:mod:`nexus.deploy.queue_metric` has the formula):

1. a prometheus-operator ``PodMonitor`` (or ``ServiceMonitor``) has Prometheus scrape every pod's
   ``metrics`` port every 10 s;
2. a prometheus-adapter rule serves ``nexus_triton_queue_us_per_request`` per pod through the custom
   metrics API (``custom.metrics.k8s.io``), computed from Triton's two counters;
3. an ``autoscaling/v2`` HorizontalPodAutoscaler keeps its pods' average at the target, and waits out a
   stabilization window before it scales down, so a pause in traffic does not drop warm replicas.

The adapter rule is cluster configuration, not part of the app's namespace, so it is not one of the
base's objects: :func:`adapter_helm_values` is a values file for the prometheus-adapter Helm chart,
which the user installs (or upgrades) once per cluster::

    helm repo add prometheus-community https://prometheus-community.github.io/helm-charts
    helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter -n monitoring \\
        --set prometheus.url=http://prometheus-operated.monitoring.svc -f prometheus-adapter-values.yaml
    kubectl get --raw "/apis/custom.metrics.k8s.io/v1beta1/namespaces/NS/pods/*/nexus_triton_queue_us_per_request"

Helm replaces lists: an adapter that already has custom rules needs this rule added to its list.
Without the chart, :func:`adapter_config` is the adapter's ``config.yaml`` (``--config``). One rule
serves every nexus deployment in the cluster (its series are told apart by namespace and pod).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nexus.deploy.labels import DEFAULT_NAME, metadata, object_labels, selector
from nexus.deploy.queue_metric import METRIC_NAME, QUEUE_DURATION, SCRAPE_INTERVAL, metrics_query
from nexus.errors import DeployError
from nexus.release.manifest import Release
from nexus.serving.model_config import ServingOptions

#: Where the deployment folder keeps the adapter's Helm values (next to the base, not in it).
ADAPTER_VALUES_FILE = "prometheus-adapter-values.yaml"
#: The queue time per request (µs) a replica is kept under when no target is given, on top of any
#: batching window: 10 ms of waiting for a free instance means every instance is busy all the time
#: (with the adaptive policy an idle replica queues a request for well under 1 ms).
BASE_TARGET_QUEUE_US = 10_000
MONITORS = ("PodMonitor", "ServiceMonitor")


@dataclass(frozen=True)
class AutoscaleSettings:
    """How the HPA scales the Deployment ``name`` (fields as `nexus deploy k8s` options name them)."""

    name: str = DEFAULT_NAME
    #: Two, so one pod can be drained or rolled while the other serves.
    min_replicas: int = 2
    max_replicas: int = 8
    #: The average queue time per request (µs) to hold; None: :func:`default_target_queue_us`.
    target_queue_us: int | None = None
    #: How long the metric must stay low before replicas are removed (Kubernetes' own default).
    scale_down_window_s: int = 300
    #: ``PodMonitor`` (scrapes the pods' ``metrics`` port) or ``ServiceMonitor`` (through the Service).
    monitor: str = "PodMonitor"
    scrape_interval: str = SCRAPE_INTERVAL
    #: Extra labels on the monitor, for a Prometheus that selects monitors by label (kube-prometheus-stack
    #: selects ``release: <its Helm release>`` unless told otherwise).
    monitor_labels: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raises: DeployError: replicas, target, window or monitor out of range."""
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise DeployError(
                f"replicas must satisfy 1 <= min <= max (got min {self.min_replicas}, max {self.max_replicas}); "
                "fix --min-replicas / --max-replicas"
            )
        if self.target_queue_us is not None and self.target_queue_us < 1:
            raise DeployError(f"--target-queue-us must be at least 1, not {self.target_queue_us}")
        if self.scale_down_window_s < 0 or self.scale_down_window_s > 3600:
            raise DeployError(f"--scale-down-window must be 0 to 3600 seconds, not {self.scale_down_window_s}")
        if self.monitor not in MONITORS:
            raise DeployError(f"--monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")


def default_target_queue_us(release: Release) -> int:
    """:data:`BASE_TARGET_QUEUE_US`, plus the default batching window when a model uses ``window``.

    With ``window`` every request waits out the queue delay even on an idle replica, so the target sits
    above it. The manifest records the policy, not the delay: a release published with another
    ``--max-queue-delay-us`` should pass its own target.
    """
    window = any(m.policy == "window" for m in release.models)
    return BASE_TARGET_QUEUE_US + (ServingOptions.max_queue_delay_us if window else 0)


def render_hpa(release: Release, settings: AutoscaleSettings, target: str | None = None) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of the Deployment ``target`` (default: ``settings.name``)."""
    settings.validate()
    queue_us = settings.target_queue_us or default_target_queue_us(release)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(settings.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target or settings.name},
            "minReplicas": settings.min_replicas,
            "maxReplicas": settings.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": METRIC_NAME},
                        "target": {"type": "AverageValue", "averageValue": str(queue_us)},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": settings.scale_down_window_s}},
        },
    }


def render_monitor(settings: AutoscaleSettings) -> dict[str, Any]:
    """A PodMonitor (or ServiceMonitor) scraping ``/metrics`` on the port named ``metrics``, in the app's namespace."""
    settings.validate()
    endpoint = {"port": "metrics", "path": "/metrics", "interval": settings.scrape_interval}
    spec: dict[str, Any] = {"selector": {"matchLabels": selector(settings.name)}}
    if settings.monitor == "PodMonitor":
        spec["podMetricsEndpoints"] = [endpoint]
    else:
        spec["endpoints"] = [endpoint]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": settings.monitor,
        "metadata": {"name": settings.name, "labels": {**object_labels(settings.name), **settings.monitor_labels}},
        "spec": spec,
    }


def render_autoscaling(release: Release, settings: AutoscaleSettings) -> list[dict[str, Any]]:
    """The namespaced objects: the HPA and the monitor that feeds its metric."""
    return [render_hpa(release, settings), render_monitor(settings)]


def adapter_rule() -> dict[str, Any]:
    """The prometheus-adapter rule serving :data:`~nexus.deploy.queue_metric.METRIC_NAME` per pod."""
    return {
        "seriesQuery": f'{QUEUE_DURATION}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{QUEUE_DURATION}$", "as": METRIC_NAME},
        "metricsQuery": metrics_query(),
    }


def adapter_helm_values() -> dict[str, Any]:
    """Values for the prometheus-community/prometheus-adapter chart: the rule under ``rules.custom``."""
    return {"rules": {"custom": [adapter_rule()]}}


def adapter_config() -> dict[str, Any]:
    """The adapter's own ``config.yaml``, for an adapter installed without the chart."""
    return {"rules": [adapter_rule()]}

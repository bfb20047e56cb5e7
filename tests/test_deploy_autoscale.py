"""Autoscaling objects validate strictly; the adapter rule and the Python formula read the same metrics."""

from __future__ import annotations

import copy
import re

import pytest

from deploy_objects import check_golden, crds, dump, sample_release
from nexus.deploy.autoscale import (
    BASE_TARGET_QUEUE_US,
    AutoscaleSettings,
    adapter_config,
    adapter_helm_values,
    adapter_rule,
    default_target_queue_us,
    render_autoscaling,
)
from nexus.deploy.queue_metric import (
    METRIC_NAME,
    QUEUE_DURATION,
    REQUEST_SUCCESS,
    fleet_queue_us_per_request,
    parse_exposition,
    promql,
    replica_queue_us_per_request,
)
from nexus.deploy.validate import validate_objects
from nexus.errors import DeployError, ManifestInvalidError
from nexus.serving.model_config import ServingOptions


@pytest.mark.parametrize("monitor", ["PodMonitor", "ServiceMonitor"])
def test_the_hpa_and_the_monitor_validate_strictly(monitor: str) -> None:
    objects = render_autoscaling(
        sample_release(), AutoscaleSettings(monitor=monitor, monitor_labels={"release": "kps"})
    )
    assert validate_objects(objects, crds()) == ["HorizontalPodAutoscaler/nexus-triton", f"{monitor}/nexus-triton"]


@pytest.mark.parametrize(
    ("index", "path", "field"), [(0, ("spec",), "minReplica"), (1, ("spec",), "podMetricEndpoints")]
)
def test_a_misspelt_field_is_refused(index: int, path: tuple[str, ...], field: str) -> None:
    obj = copy.deepcopy(render_autoscaling(sample_release(), AutoscaleSettings())[index])
    node = obj
    for key in path:
        node = node[key]
    node[field] = 1
    with pytest.raises(ManifestInvalidError, match=field):
        validate_objects([obj], crds())


def test_the_hpa_scales_the_deployment_on_the_adapters_metric_and_waits_before_scaling_down() -> None:
    hpa, monitor = render_autoscaling(sample_release(), AutoscaleSettings(min_replicas=1, max_replicas=5))
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nexus-triton"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 5)
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == adapter_rule()["name"]["as"] == METRIC_NAME
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": str(BASE_TARGET_QUEUE_US)}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "nexus-triton"}


def test_the_default_target_sits_above_the_batching_window_when_a_model_waits_it_out() -> None:
    assert default_target_queue_us(sample_release()) == BASE_TARGET_QUEUE_US
    window = default_target_queue_us(sample_release(policy="window"))
    assert window == BASE_TARGET_QUEUE_US + ServingOptions.max_queue_delay_us
    hpa = render_autoscaling(sample_release(), AutoscaleSettings(target_queue_us=2500))[0]
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "2500"


def test_the_adapter_rule_queries_the_metrics_the_python_formula_reads() -> None:
    rule = adapter_rule()
    query = rule["metricsQuery"]
    assert re.findall(r"\b(nv_\w+)\{<<\.LabelMatchers>>\}", query) == [QUEUE_DURATION, REQUEST_SUCCESS]
    assert query.count("by (<<.GroupBy>>)") == 2
    assert rule["seriesQuery"].startswith(QUEUE_DURATION + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert adapter_helm_values()["rules"]["custom"] == [rule] == adapter_config()["rules"]
    filled = promql('namespace="ml",pod=~"a|b"', "pod")
    assert "<<" not in filled
    assert f'{QUEUE_DURATION}{{namespace="ml",pod=~"a|b"}}[1m]' in filled


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (AutoscaleSettings(min_replicas=0), "--min-replicas"),
        (AutoscaleSettings(min_replicas=4, max_replicas=3), "--max-replicas"),
        (AutoscaleSettings(target_queue_us=0), "--target-queue-us"),
        (AutoscaleSettings(monitor="Probe"), "--monitor"),
    ],
)
def test_bad_settings_are_refused_with_the_option_to_fix(settings: AutoscaleSettings, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        render_autoscaling(sample_release(), settings)


def scrape_text(queue: dict[str, float], success: dict[str, float]) -> str:
    lines = [
        f"# HELP {QUEUE_DURATION} Cumulative inference queuing duration in microseconds",
        f"# TYPE {QUEUE_DURATION} counter",
    ]
    lines += [f'{QUEUE_DURATION}{{model="{m}",version="1"}} {v}' for m, v in queue.items()]
    lines += [f'{REQUEST_SUCCESS}{{model="{m}",version="1"}} {v}' for m, v in success.items()]
    lines.append('nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5')
    return "\n".join(lines) + "\n"


def test_the_formula_weighs_requests_across_models_and_counts_a_reset_from_zero() -> None:
    before = scrape_text({"a": 1000, "b": 50_000}, {"a": 10, "b": 100})
    after = scrape_text({"a": 31_000, "b": 50_000, "new": 9e9}, {"a": 40, "b": 100, "new": 5})
    # a: 30 000 µs over 30 requests; b idle; "new" has one sample in the window and counts in neither
    assert replica_queue_us_per_request(before, after) == 1000.0
    restarted = scrape_text({"a": 800}, {"a": 2})
    assert replica_queue_us_per_request(before, restarted) == 400.0  # reset: each counter counted from 0
    assert replica_queue_us_per_request(before, before) == 0.0  # idle: no request, no queue
    assert fleet_queue_us_per_request([(before, after), (before, before)]) == 500.0  # the HPA's average
    with pytest.raises(ValueError, match="no replica"):
        fleet_queue_us_per_request([])


def test_the_exposition_parser_reads_escaped_labels_and_refuses_garbage() -> None:
    samples = parse_exposition('x{a="q\\"uote",b="back\\\\slash"} 2.5 1700000000000\ny 3\n')
    assert samples == {("x", (("a", 'q"uote'), ("b", "back\\slash"))): 2.5, ("y", ()): 3.0}
    with pytest.raises(ValueError, match="not a Prometheus sample"):
        parse_exposition("this is not metrics\n")


def test_the_rendering_matches_its_golden_files() -> None:
    release = sample_release()
    check_golden("autoscale/podmonitor.yaml", dump(render_autoscaling(release, AutoscaleSettings())))
    check_golden(
        "autoscale/servicemonitor.yaml", dump(render_autoscaling(release, AutoscaleSettings(monitor="ServiceMonitor")))
    )
    check_golden("autoscale/prometheus-adapter-values.yaml", dump(adapter_helm_values()))

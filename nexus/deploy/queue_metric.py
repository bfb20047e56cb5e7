"""The autoscaling metric: Triton's queue time per request, one formula written in PromQL and in Python.

For one replica (pod) over a window, summed over all its series (every model and version)::

    queue_us_per_request = sum(increase(nv_inference_queue_duration_us))
                           / max(sum(increase(nv_inference_request_success)), 1)

the mean time, in microseconds, a request completed in the window waited in a scheduler queue before an
instance took it. The HorizontalPodAutoscaler's ``Pods`` metric averages it over the pods
(``AverageValue``); :func:`fleet_queue_us_per_request` does the same from each replica's scrapes.

NVIDIA's example (triton-inference-server/server ``deploy/k8s-onprem``) scales on
``avg(delta(queue[30s]) / (1 + delta(success[30s]))) by (pod)``. This one differs on purpose:

- ``increase``, not ``delta``: both are counters, so a restarted Triton (a reset) is no negative figure;
- it sums before dividing, a request-weighted mean over the pod's models: averaging per-model ratios
  lets an idle model (0 / 1) halve a busy one's figure;
- ``clamp_min(..., 1)`` rather than ``1 + ...``: the exact mean once one request has completed, 0 idle;
- a 1 minute window over 10 s scrapes (the PodMonitor's interval): at least 4 samples per window, where
  a 30 s window over Prometheus' default 30 s scrape interval often holds one sample and yields nothing.

With two scrapes of one replica (:func:`replica_queue_us_per_request`) the Python figure is what
Prometheus computes from those two samples: ``increase`` extrapolates a pod's counters to the window by
one factor (they are scraped together), which the ratio cancels, except where it stops a counter's
extrapolation at zero (a series younger than the window); a series in one scrape only has one sample
in the window and counts in neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Triton's cumulative queue time per model and version, in microseconds.
QUEUE_DURATION = "nv_inference_queue_duration_us"
#: Triton's count of successful requests per model and version.
REQUEST_SUCCESS = "nv_inference_request_success"
#: The name the custom metrics API (prometheus-adapter) serves the metric under, and the HPA asks for.
METRIC_NAME = "nexus_triton_queue_us_per_request"
#: The window of ``increase`` in the rule, and the scrape interval it is sized for (4 samples per window).
WINDOW = "1m"
SCRAPE_INTERVAL = "10s"

Series = tuple[str, tuple[tuple[str, str], ...]]

_SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def metrics_query(window: str = WINDOW) -> str:
    """The rule's ``metricsQuery``: PromQL with prometheus-adapter's ``<<.LabelMatchers>>`` and ``<<.GroupBy>>``."""
    return promql("<<.LabelMatchers>>", "<<.GroupBy>>", window)


def promql(label_matchers: str, group_by: str, window: str = WINDOW) -> str:
    """The query with the adapter's placeholders filled, e.g. ``('namespace="ml",pod=~"a|b"', "pod")``."""

    def total(metric: str) -> str:
        return f"sum by ({group_by}) (increase({metric}{{{label_matchers}}}[{window}]))"

    return f"{total(QUEUE_DURATION)} / clamp_min({total(REQUEST_SUCCESS)}, 1)"


def parse_exposition(text: str) -> dict[Series, float]:
    """Prometheus' text exposition format (what Triton's ``/metrics`` returns): (name, sorted labels) -> value.

    Raises:
        ValueError: a line that is neither a comment, blank, nor a sample.
    """
    samples: dict[Series, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {raw!r}")
        name, body, value = match.groups()
        labels = []
        for label in _LABEL.finditer(body or ""):
            labels.append((label[1], re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m[0]], label[2])))
        samples[(name, tuple(sorted(labels)))] = float(value)
    return samples


def _increase(before: Mapping[Series, float], after: Mapping[Series, float], metric: str) -> float:
    """What ``sum(increase(metric[w]))`` sees from two samples: series in both, a reset counted from 0."""
    total = 0.0
    for series, value in after.items():
        if series[0] == metric and series in before:
            previous = before[series]
            total += value - previous if value >= previous else value
    return total


def replica_queue_us_per_request(before: str, after: str) -> float:
    """One replica's queue time per request (µs) between two scrapes of its ``/metrics``, as the rule computes it."""
    first, second = parse_exposition(before), parse_exposition(after)
    queued = _increase(first, second, QUEUE_DURATION)
    requests = _increase(first, second, REQUEST_SUCCESS)
    return queued / max(requests, 1.0)


def fleet_queue_us_per_request(scrapes: Iterable[tuple[str, str]]) -> float:
    """The HPA's view: the mean over replicas of :func:`replica_queue_us_per_request`, one (before, after) each.

    Raises:
        ValueError: no replica given (the HPA has no value to act on either).
    """
    values = [replica_queue_us_per_request(before, after) for before, after in scrapes]
    if not values:
        raise ValueError("no replica scrapes: the metric is undefined")
    return sum(values) / len(values)

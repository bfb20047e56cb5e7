"""One fleet, put together: a release rendered as `nexus deploy k8s` renders it, its pods, endpoints, router
and rolling updates (:class:`Harness`), and the autoscaler's metric sampled from the pods' scrapes
(:class:`MetricSampler`).

The timings are the rendered Deployment's, from settings scaled down: readiness period 1 s and 2 failures
(a 2 s readiness reaction), preStop 3 s, Triton's exit timeout 5 s, so a grace of 3 + 5 + 5 = 13 s (as
``K8sSettings.termination_grace`` renders it); a startup timeout of 60 s, so the rendered progress deadline
is 180 s (the broken-release case passes a shorter one). The propagation delay, 1.5 s, stands for
kube-proxy's and the load balancers' (``PROPAGATION_SECONDS`` is 5 s for a real cluster).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from fleet.controller import Fleet
from fleet.endpoints import Endpoints, Router
from fleet.pods import Pod, PodSpec, pod_spec
from fleet.world import API_KEY, CREDENTIALS, World
from nexus.deploy.k8s import K8sSettings, render_k8s
from nexus.deploy.queue_metric import REQUEST_SUCCESS, fleet_queue_us_per_request, parse_exposition
from nexus.release import Release

READINESS_PERIOD = 1
READINESS_FAILURES = 2
PRESTOP = 3
EXIT_TIMEOUT = 5
PROPAGATION = 1.5
#: The startup probe's budget; the rendered progress deadline is 120 s more.
STARTUP_TIMEOUT = 60


def settings(world: World, replicas: int) -> K8sSettings:
    return K8sSettings(
        s3_endpoint=world.endpoint,
        s3_region="us-east-1",
        gpus=0,
        replicas=replicas,
        readiness_period=READINESS_PERIOD,
        readiness_failures=READINESS_FAILURES,
        prestop=PRESTOP,
        exit_timeout=EXIT_TIMEOUT,
        startup_timeout=STARTUP_TIMEOUT,
    )


def spec(world: World, release: Release, replicas: int) -> PodSpec:
    """The pods of ``release``'s rendered Deployment, with the Secrets a cluster would hold."""
    chosen = settings(world, replicas)
    secrets = {
        chosen.credentials_secret or "": CREDENTIALS,
        chosen.api_key_secret: {chosen.api_key_secret_key: API_KEY},
    }
    return pod_spec(render_k8s(release, chosen), secrets)


@dataclass
class Harness:
    world: World
    replicas: int
    endpoints: Endpoints = field(init=False)
    fleet: Fleet = field(init=False)
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.endpoints = Endpoints(PROPAGATION)
        self.fleet = Fleet(self.endpoints)
        self.router = Router(self.endpoints)

    def spec(self, release: Release) -> PodSpec:
        return spec(self.world, release, self.replicas)

    def serving(self) -> set[str]:
        """The releases of the pods in the router's view."""
        return {p.release for p in self.endpoints.view()}

    def close(self) -> None:
        self.fleet.close()


def scrape(pod: Pod) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@dataclass(frozen=True)
class Sample:
    #: Seconds since the sampler started, at the window's end.
    at: float
    #: The HPA's metric over the window: the mean over pods of the queue time per request (µs).
    queue_us: float
    #: Requests the window's pods completed (from the same scrapes).
    requests: int
    #: Seconds since the sampler started when the window's first scrapes began: every request counted in
    #: the window completed between ``since`` and ``at``.
    since: float = 0.0


class MetricSampler:
    """Scrapes every pod of the fleet each ``window`` seconds and computes the metric the HPA acts on, with
    :func:`nexus.deploy.queue_metric.fleet_queue_us_per_request` (the adapter rule's formula), over the pods
    scraped at both ends of the window (the window is scaled down from the rule's 1 minute)."""

    def __init__(self, fleet: Fleet, window: float = 2.0) -> None:
        self.fleet = fleet
        self.window = window
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> MetricSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.window + 10)

    def _run(self) -> None:
        started = self.started
        since = time.monotonic() - started
        before = {pod: scrape(pod) for pod in self.fleet.pods}
        # the windows end at started + k * window, whatever the scrapes took (they do not drift); a scrape
        # that overran a boundary makes that window end at the next one, never a window cut short
        k = 0
        while True:
            k = max(k + 1, math.floor((time.monotonic() - started) / self.window) + 1)
            if self._stop.wait(max(0.0, started + k * self.window - time.monotonic())):
                return
            scraped = time.monotonic() - started
            after = {pod: scrape(pod) for pod in self.fleet.pods}
            pairs = [(before[pod], text) for pod, text in after.items() if pod in before]
            value = fleet_queue_us_per_request(pairs)
            done = sum(int(_successes(b, a)) for b, a in pairs)
            self.samples.append(Sample(time.monotonic() - started, value, done, since))
            before, since = after, scraped


def _successes(before: str, after: str) -> float:
    first, second = parse_exposition(before), parse_exposition(after)
    return sum(v - first.get(s, 0.0) for s, v in second.items() if s[0] == REQUEST_SUCCESS)

"""The Service's endpoints and a readiness-aware round-robin router over them.

:class:`Endpoints` plays kubelet's readiness probe and the EndpointSlice controller: a prober thread per
pod polls `/v2/health/ready` every ``periodSeconds``; ``failureThreshold`` failures in a row take the pod
out, one success (``successThreshold: 1``) puts it in; a deleted pod leaves at once. Every change reaches
the router ``propagation`` seconds later, as a Service's changes reach kube-proxy and load balancers.

:class:`Router` is a client-side balancer: each request goes to the next pod of the view it has, round
robin. A client-side pick, not a proxy process: kube-proxy is no hop in the data path either, and a proxy
of our own would add its queue and its failure modes to what the load generator counts.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request

from fleet.pods import Pod


def probe(pod: Pod, timeout: float = 2.0) -> bool:
    """The readiness probe (``httpGet`` `/v2/health/ready`, ``timeoutSeconds: 2``): 200 or not."""
    try:
        with urllib.request.urlopen(f"{pod.url}/v2/health/ready", timeout=timeout) as r:
            return int(r.status) == 200
    except OSError:
        return False


class Endpoints:
    def __init__(self, propagation: float) -> None:
        self.propagation = propagation
        self._lock = threading.Lock()
        self._ready: list[Pod] = []
        #: (when, the ready pods from then on): the router reads the entry ``propagation`` seconds old.
        self._history: list[tuple[float, tuple[Pod, ...]]] = [(float("-inf"), ())]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, pod: Pod) -> None:
        """Probe ``pod`` from now on (it is created not ready)."""
        thread = threading.Thread(target=self._prober, args=(pod,), daemon=True, name=f"probe-{pod.name}")
        thread.start()
        self._threads.append(thread)

    def _prober(self, pod: Pod) -> None:
        failures = 0
        while not self._stop.wait(pod.spec.readiness_period):
            if pod.terminating:
                return
            pod.keep_running()
            if probe(pod):
                failures = 0
                self._set(pod, ready=True)
            else:
                failures += 1
                if failures >= pod.spec.readiness_failures:
                    self._set(pod, ready=False)

    def remove(self, pod: Pod) -> None:
        """A deleted pod: out of the endpoints at once (the router hears of it ``propagation`` s later)."""
        self._set(pod, ready=False)

    def _set(self, pod: Pod, *, ready: bool) -> None:
        with self._lock:
            if ready and (pod in self._ready or pod.terminating):
                return
            if not ready and pod not in self._ready:
                return
            self._ready = [*self._ready, pod] if ready else [p for p in self._ready if p is not pod]
            self._history.append((time.monotonic(), tuple(self._ready)))

    def ever(self, pod: Pod) -> bool:
        """Whether ``pod`` was ever in the endpoints."""
        with self._lock:
            return any(pod in pods for _, pods in self._history)

    def ready(self) -> tuple[Pod, ...]:
        """The endpoints now, as the Service has them."""
        with self._lock:
            return tuple(self._ready)

    def view(self) -> tuple[Pod, ...]:
        """The endpoints as the router has heard of them: as they were ``propagation`` seconds ago."""
        seen = time.monotonic() - self.propagation
        with self._lock:
            return next(pods for when, pods in reversed(self._history) if when <= seen)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


class Router:
    """Round robin over the endpoints' :meth:`Endpoints.view`."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._turn = itertools.count()

    def pick(self) -> Pod | None:
        view = self.endpoints.view()
        return view[next(self._turn) % len(view)] if view else None

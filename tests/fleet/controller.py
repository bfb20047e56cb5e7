"""The Deployment controller's rolling update, played on local pods (:class:`Fleet`).

With ``maxSurge: 1, maxUnavailable: 0`` (what `nexus deploy k8s` renders, and all this harness plays):
create one pod of the new template; once it is Ready, delete one old pod (it leaves the endpoints at once,
then runs its preStop pause, SIGTERM, SIGKILL at the end of the grace period: :meth:`fleet.pods.Pod.terminate`,
in the background, for a deleted pod no longer counts); repeat until no old pod is left. A new pod not Ready
within ``progressDeadlineSeconds`` of the last progress stalls the rollout (the Deployment's
``Progressing=False, ProgressDeadlineExceeded``): Kubernetes keeps it and the old pods, and so does this.
Rolling to a template again deletes that template's pods that are not Ready first (they serve nothing).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fleet.endpoints import Endpoints
from fleet.pods import Pod, PodSpec


@dataclass
class Rollout:
    release: str
    started: float
    #: When each new pod became Ready, seconds after the start.
    ready_after: list[float] = field(default_factory=list)
    #: Seconds from the start until every replica was a Ready pod of the release (None: never).
    complete_after: float | None = None
    #: Seconds from the start until the last old pod had ended.
    drained_after: float | None = None
    stalled: bool = False
    #: How each deleted pod ended ("exited 0 after SIGTERM", ...).
    endings: list[str] = field(default_factory=list)


class Fleet:
    """The pods of one Deployment, its endpoints, and its rollouts."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.pods: list[Pod] = []
        self._terminations: dict[Pod, threading.Thread] = {}
        self._count = 0
        #: Each rollout's record of its old pods' endings (a rollout may start before the last one's have ended).
        self._drains: list[threading.Thread] = []

    def _create(self, spec: PodSpec) -> Pod:
        self._count += 1
        pod = Pod(f"{spec.release}-{self._count}", spec)
        pod.start()
        self.pods.append(pod)
        self.endpoints.add(pod)
        return pod

    def _delete(self, pod: Pod, prestop: float | None) -> Pod:
        self.pods.remove(pod)
        self.endpoints.remove(pod)
        thread = threading.Thread(target=pod.terminate, args=(prestop,), daemon=True, name=f"stop-{pod.name}")
        thread.start()
        self._terminations[pod] = thread
        return pod

    def _wait_ready(self, pods: list[Pod], deadline: float, *, heard: bool = False) -> bool:
        """Whether ``pods`` are all in the endpoints (``heard``: and in the router's view) before ``deadline``."""
        while time.monotonic() < deadline:
            ready = self.endpoints.view() if heard else self.endpoints.ready()
            if all(p in ready for p in pods):
                return True
            time.sleep(0.05)
        return False

    def create(self, spec: PodSpec, timeout: float = 180.0) -> None:
        """The Deployment's first apply: ``spec.replicas`` pods at once, waited for until Ready and in the
        router's view."""
        pods = [self._create(spec) for _ in range(spec.replicas)]
        if not self._wait_ready(pods, time.monotonic() + timeout, heard=True):
            raise AssertionError("the first pods were not ready:\n" + "\n".join(p.server.errors() for p in pods))

    def rollout(
        self, spec: PodSpec, *, prestop: float | None = None, progress_deadline: float | None = None
    ) -> Rollout:
        """Roll every pod to ``spec``'s template (see the module's docstring); returns when done or stalled,
        with the old pods' terminations still under way (:meth:`settle` waits for them).

        Args:
            prestop: overrides the old pods' preStop pause (0: the control without one).
            progress_deadline: overrides the Deployment's ``progressDeadlineSeconds``.
        """
        assert (spec.max_surge, spec.max_unavailable) == (1, 0), "the harness plays maxSurge 1, maxUnavailable 0"
        result = Rollout(spec.release, time.monotonic())
        deadline_s = progress_deadline if progress_deadline is not None else spec.progress_deadline
        ready = self.endpoints.ready()
        ending = [self._delete(p, prestop) for p in list(self.pods) if p.release != spec.release and p not in ready]
        while old := [p for p in self.pods if p.release != spec.release]:
            current = [p for p in self.pods if p.release == spec.release]
            surge = [p for p in current if p not in self.endpoints.ready()] or [self._create(spec)]
            if not self._wait_ready(surge, time.monotonic() + deadline_s):
                result.stalled = True
                return result
            result.ready_after.append(time.monotonic() - result.started)
            ending.append(self._delete(old[0], prestop))
        while len([p for p in self.pods if p.release == spec.release]) < spec.replicas:
            pod = self._create(spec)
            if not self._wait_ready([pod], time.monotonic() + deadline_s):
                result.stalled = True
                return result
            result.ready_after.append(time.monotonic() - result.started)
        result.complete_after = time.monotonic() - result.started
        drain = threading.Thread(target=self._drained, args=(result, ending), daemon=True)
        drain.start()
        self._drains.append(drain)
        return result

    def _drained(self, result: Rollout, ending: list[Pod]) -> None:
        for pod in ending:
            self._terminations[pod].join()
            result.endings.append(pod.ended or "?")
        result.drained_after = time.monotonic() - result.started

    def delete(self, pod: Pod, prestop: float | None = None) -> None:
        """Delete one pod by hand (a drain, an eviction)."""
        self._delete(pod, prestop)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for every deleted pod to have ended (and every rollout's record of it)."""
        for thread in [*self._drains, *self._terminations.values()]:
            thread.join(timeout=timeout)

    def close(self) -> None:
        """Stop every pod, the remaining ones at once (in parallel) while the deleted ones end."""
        closing = [threading.Thread(target=pod.close, daemon=True, name=f"close-{pod.name}") for pod in self.pods]
        for thread in closing:
            thread.start()
        self.settle()
        for thread in closing:
            thread.join()
        self.pods.clear()
        self.endpoints.close()

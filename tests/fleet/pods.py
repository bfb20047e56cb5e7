"""Pods of a rendered Deployment, as local processes: what the harness reads from the Deployment
(:class:`PodSpec`) and one replica running it (:class:`Pod`).

A pod's `tritonserver` runs the Deployment's container ``args`` exactly, after kubelet's ``$(VAR)``
expansion with the container's environment (:func:`nexus.deploy.triton_args.expand_env`); only the
addresses and ports are made local (:func:`nexus.deploy.triton_args.localize`): the repository stays the
rendered ``s3://http://host:port/bucket/releases/<id>``. The environment is the container's ``env``, each
``secretKeyRef`` filled from the Secrets given, as kubelet fills it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from helpers import free_port
from nexus.deploy.labels import RELEASE_LABEL
from nexus.deploy.triton_args import expand_env, localize
from nexus.serving.server import TritonServer


@dataclass(frozen=True)
class PodSpec:
    """What one rendered Deployment says of its pods and of how it rolls them."""

    release: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    replicas: int
    prestop: float
    readiness_period: float
    readiness_failures: int
    grace: float
    progress_deadline: float
    max_surge: int
    max_unavailable: int

    @property
    def repository(self) -> str:
        return next(a.split("=", 1)[1] for a in self.args if a.startswith("--model-repository="))


def pod_spec(objects: list[dict[str, Any]], secrets: Mapping[str, Mapping[str, str]]) -> PodSpec:
    """The Deployment among ``objects`` (what :func:`nexus.deploy.k8s.render_k8s` returns), read as kubelet
    and the Deployment controller read it; ``secrets``: Secret name -> its data."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    spec = deployment["spec"]
    template = spec["template"]
    (container,) = template["spec"]["containers"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = secrets[ref["name"]][ref["key"]] if ref else entry["value"]
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    rolling = spec["strategy"]["rollingUpdate"]
    return PodSpec(
        release=template["metadata"]["labels"][RELEASE_LABEL],
        args=tuple(container["args"]),
        env=env,
        replicas=int(spec.get("replicas", 1)),
        prestop=float(container["lifecycle"]["preStop"]["sleep"]["seconds"]),
        readiness_period=float(readiness["periodSeconds"]),
        readiness_failures=int(readiness["failureThreshold"]),
        grace=float(template["spec"]["terminationGracePeriodSeconds"]),
        progress_deadline=float(spec["progressDeadlineSeconds"]),
        max_surge=int(rolling["maxSurge"]),
        max_unavailable=int(rolling["maxUnavailable"]),
    )


@dataclass(eq=False)  # a pod is itself: compared and hashed by identity
class Pod:
    """One replica: a `tritonserver` on local ports with the spec's flags, restarted when it exits (the pod's
    ``restartPolicy: Always``, with kubelet's doubling back-off scaled from 10 s to 1 s)."""

    name: str
    spec: PodSpec
    #: Seconds kubelet waits before the first restart of an exited container (doubling each time).
    backoff: float = 1.0
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    restarts: int = 0
    #: When the pod was created, deleted (time.monotonic()), and how its container ended.
    created: float = field(default_factory=time.monotonic)
    deleted: float | None = None
    ended: str | None = None

    def __post_init__(self) -> None:
        self.args = localize(
            expand_env(self.spec.args, self.spec.env),
            repository=self.spec.repository,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
        )
        self.server = TritonServer(
            repository=self.spec.repository,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            args=self.args,
            env=dict(self.spec.env),
        )
        self._lock = threading.Lock()
        self._next_start = 0.0

    @property
    def release(self) -> str:
        return self.spec.release

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def terminating(self) -> bool:
        return self.deleted is not None

    def start(self) -> None:
        self.server.start()

    def keep_running(self) -> None:
        """kubelet's restart of an exited container, after the back-off (called by the prober each period)."""
        with self._lock:
            if self.terminating or self.server.is_alive():
                return
            now = time.monotonic()
            if not self._next_start:
                self._next_start = now + self.backoff * 2**self.restarts
            elif now >= self._next_start:
                self.restarts += 1
                self._next_start = 0.0
                self.server.start()

    def terminate(self, prestop: float | None = None) -> None:
        """What kubelet does to a deleted pod (run it in a thread): the preStop pause (``prestop`` overrides
        the spec's), SIGTERM (Triton refuses new requests and waits ``--exit-timeout-secs`` for the ones in
        flight), SIGKILL when the grace period, counted from the deletion, runs out."""
        with self._lock:
            self.deleted = deleted = time.monotonic()
        time.sleep(self.spec.prestop if prestop is None else prestop)
        pid = self.server.pid
        if pid is None or not self.server.is_alive():
            self.ended = "not running"
            return
        os.kill(pid, signal.SIGTERM)
        while self.server.is_alive() and time.monotonic() < deleted + self.spec.grace:
            time.sleep(0.05)
        if self.server.is_alive():
            os.kill(pid, signal.SIGKILL)
            while self.server.is_alive():
                time.sleep(0.05)
            self.ended = "killed at the end of the grace period"
        else:
            self.ended = f"exited {self.server.returncode} after SIGTERM"

    def close(self) -> None:
        """Stop the process whatever its state (the harness's own cleanup, not a pod's termination)."""
        with self._lock:
            self.deleted = self.deleted or time.monotonic()
        self.server.stop(timeout=10)

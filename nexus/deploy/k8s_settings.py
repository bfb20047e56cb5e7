"""The choices of a plain-Kubernetes deployment (`nexus deploy k8s`), with their defaults and checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nexus.deploy.labels import DEFAULT_IMAGE, DEFAULT_NAME, object_labels, selector
from nexus.errors import DeployError

#: The user the NGC tritonserver image provides (`triton-server`, uid 1000).
TRITON_UID = 1000
#: Seconds between Kubernetes removing a pod from its Service's endpoints and every proxy and load
#: balancer having heard of it: what the preStop pause adds to the readiness reaction by default.
PROPAGATION_SECONDS = 5
#: Seconds the grace period keeps after the preStop pause and Triton's exit timeout.
GRACE_MARGIN_SECONDS = 5

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class K8sSettings:
    """What `nexus deploy k8s` renders, beyond the release itself.

    Attributes:
        name: the app's name: of the Deployment, Service, ServiceAccount, ... and the selector's label.
        namespace: set on every object when given; else `kubectl apply -n NS` (or the context's) decides.
        image: a Triton image with the Python backend and torch (`triton/Dockerfile`).
        replicas: pods; the PodDisruptionBudget lets one at a time go.
        gpus: GPUs per pod (`nvidia.com/gpu`); None: :func:`nexus.deploy.sizing.default_gpus`; 0: CPU.
        cpu, memory, shm_size: Kubernetes quantities that override the sizes from the release's models.
        s3_endpoint: the S3 endpoint as pods reach it (`http://minio.storage:9000`), for a bucket that is
            not on AWS S3. The project's own endpoint (often `localhost`) is not used: pods are elsewhere.
        s3_region: `AWS_DEFAULT_REGION` in the pod, where Triton cannot find the bucket's region.
        credentials_secret: a Secret holding the bucket's credentials, by name (never its values): keys
            `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for `s3://`, `credentials.json` (a service
            account key) for `gs://`. None: the pod's own identity (IRSA, Workload Identity).
        api_key_secret, api_key_secret_key: the Secret and key holding the model-repository API key.
        exit_timeout: Triton's ``--exit-timeout-secs``: how long SIGTERM waits for requests in flight.
        readiness_period, readiness_failures: the readiness probe's period and failure threshold; their
            product is the readiness reaction.
        prestop: the preStop pause in seconds; None: the readiness reaction plus
            :data:`PROPAGATION_SECONDS`. It must be longer than the readiness reaction.
        startup_timeout: how long the startup probe lets the models load before the pod is restarted.
        metrics_namespaces: namespaces besides the pods' own allowed to scrape the metrics port (where
            Prometheus runs).
        service_account_annotations: e.g. `eks.amazonaws.com/role-arn` for IRSA.
    """

    name: str = DEFAULT_NAME
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    replicas: int = 2
    gpus: int | None = None
    cpu: str | None = None
    memory: str | None = None
    shm_size: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Secrets' names and keys, never their values
    credentials_secret: str | None = "nexus-storage-credentials"  # noqa: S105
    api_key_secret: str = "nexus-api-key"  # noqa: S105
    api_key_secret_key: str = "key"  # noqa: S105
    exit_timeout: int = 30
    readiness_period: int = 5
    readiness_failures: int = 2
    prestop: int | None = None
    startup_timeout: int = 600
    metrics_namespaces: tuple[str, ...] = ()
    service_account_annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, value in [("--name", self.name), ("--namespace", self.namespace)]:
            if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
                raise DeployError(
                    f"{what} {value!r} is not a Kubernetes name: use lowercase letters, digits and '-', "
                    "starting with a letter, at most 63 characters"
                )
        for what, number, least in [
            ("--replicas", self.replicas, 1),
            ("--gpus", self.gpus if self.gpus is not None else 0, 0),
            ("--exit-timeout", self.exit_timeout, 1),
            ("--readiness-period", self.readiness_period, 1),
            ("--readiness-failures", self.readiness_failures, 1),
            ("--startup-timeout", self.startup_timeout, self.readiness_period),
        ]:
            if number < least:
                raise DeployError(f"{what} must be at least {least}, not {number}")
        if self.prestop is not None and self.prestop <= self.readiness_reaction:
            raise DeployError(
                f"--prestop {self.prestop}s must be longer than the readiness reaction "
                f"({self.readiness_period}s x {self.readiness_failures} = {self.readiness_reaction}s), or a "
                "pod still takes requests when Triton stops; raise it"
            )
        if not self.api_key_secret or not self.api_key_secret_key:
            raise DeployError("--api-key-secret needs a Secret name and key: the model-repository API stays locked")

    @property
    def readiness_reaction(self) -> int:
        """Seconds a Triton that stopped being ready may still pass the readiness probe."""
        return self.readiness_period * self.readiness_failures

    @property
    def prestop_seconds(self) -> int:
        return self.prestop if self.prestop is not None else self.readiness_reaction + PROPAGATION_SECONDS

    @property
    def termination_grace(self) -> int:
        """The pod's ``terminationGracePeriodSeconds``: the preStop pause, then Triton's exit timeout, then a margin.

        Kubernetes starts the grace period's clock before the preStop hook, and sends SIGTERM only when
        the hook ends, so the grace must cover both.
        """
        return self.prestop_seconds + self.exit_timeout + GRACE_MARGIN_SECONDS

    def labels(self) -> dict[str, str]:
        """The labels every object gets (fleet.md's convention)."""
        return object_labels(self.name)

    def selector(self) -> dict[str, str]:
        """The selector's labels: the name only, so it never changes from one release to the next."""
        return selector(self.name)

    def metadata(self, name: str | None = None) -> dict[str, object]:
        meta: dict[str, object] = {"name": name or self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels()
        return meta

"""A release as a KServe ``InferenceService`` on KServe's Triton runtime, with its ServiceAccount and S3 Secret.

KServe's storage initializer copies the release (``storageUri``, with its trailing ``/`` so that the
prefix ``.../<id>`` cannot also match ``.../<id>-other``) into each pod's ``/mnt/models``, where the
``kserve-tritonserver`` ClusterServingRuntime serves it (HTTP on 8080, gRPC on 9000, metrics on 8002).
Each pod holds a frozen copy: a new release is always new pods, rolled with ``maxUnavailable: 0``.
The runtime's args come first and KServe appends the predictor's: strict readiness, an exit timeout
that lets in-flight requests finish on SIGTERM, and the latency summaries.

Standard mode (KServe's Deployment, Service and HPA; the annotation value of the v0.15+ line, which
reads the older ``RawDeployment`` as the same) is the default. ``mode="Knative"`` renders a Knative
service instead: Knative allows no ``lifecycle`` hook and drains through its queue-proxy, and rolls
revisions by traffic rather than by a Deployment strategy, so neither is rendered there.

Credentials: the S3 endpoint, region and TLS settings are annotations on the ServiceAccount and on the
Secret ``<name>-storage`` the ServiceAccount lists, which KServe reads to configure the storage initializer.
The rendered Secret carries **no data**. Its keys come from a kustomize ``secretGenerator`` with
``behavior: merge`` (:func:`secret_generator`) reading ``s3-credentials.env`` in the deployment
folder, which is git-ignored: ``kubectl apply -k`` merges the two into one Secret, and refuses to build
while the file is missing, so nothing is ever applied without keys and no key is ever committed. The
file holds ``AWS_ACCESS_KEY_ID=...`` and ``AWS_SECRET_ACCESS_KEY=...`` (the names KServe reads by
default). For ``gs://`` releases the generator reads ``gcloud-application-credentials.json`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nexus.deploy import sizing
from nexus.deploy.labels import DEFAULT_IMAGE, DEFAULT_NAME, http_probe, metadata, pod_labels
from nexus.errors import DeployError
from nexus.release.manifest import Release
from nexus.serving.admin import LIVE_PATH, READY_PATH

MODES = ("Standard", "Knative")
#: KServe's Triton ClusterServingRuntime, and the HTTP port its args give Triton.
RUNTIME = "kserve-tritonserver"
RUNTIME_HTTP_PORT = 8080
#: The git-ignored files the Secret's keys are generated from, and the keys each must hold.
S3_CREDENTIALS_FILE = "s3-credentials.env"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GCS_CREDENTIALS_FILE = "gcloud-application-credentials.json"
_ANNOTATION = "serving.kserve.io/"


@dataclass(frozen=True)
class KServeSettings:
    name: str = DEFAULT_NAME
    #: ``Standard`` (plain Deployments, KServe's default) or ``Knative``.
    mode: str = "Standard"
    image: str = DEFAULT_IMAGE
    min_replicas: int = 2
    max_replicas: int = 8
    #: GPUs per pod; None: 1 when a model may run on a GPU (kind auto or gpu), else 0.
    gpus: int | None = None
    #: Kubernetes quantities; None: sized from the models (:mod:`nexus.deploy.sizing`, as `nexus deploy k8s`).
    cpu: str | None = None
    memory: str | None = None
    #: The memory emptyDir on /dev/shm; None: sized from the models (:func:`shm_bytes`).
    shm_size: str | None = None
    #: Seconds Triton waits for in-flight requests after SIGTERM (``--exit-timeout-secs``).
    exit_timeout_s: int = 30
    #: Seconds the pod keeps serving after it is marked for deletion, while endpoints drop it (Standard only).
    prestop_s: int = 10
    #: The S3 endpoint, as `.nexusrc` `[storage] endpoint_url` gives it (``http://minio:9000``); None: AWS.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_verify_ssl: bool = True

    def validate(self) -> None:
        """Raises: DeployError: a value out of range, named with the option that fixes it."""
        if self.mode not in MODES:
            raise DeployError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        low = 0 if self.mode == "Knative" else 1
        if self.min_replicas < low or self.max_replicas < max(self.min_replicas, 1):
            raise DeployError(
                f"replicas must satisfy {low} <= min <= max, max >= 1 (got min {self.min_replicas}, "
                f"max {self.max_replicas}); fix --min-replicas / --max-replicas"
            )
        if (self.gpus is not None and self.gpus < 0) or self.exit_timeout_s < 1 or self.prestop_s < 0:
            raise DeployError("--gpus and --prestop must be 0 or more, --exit-timeout at least 1 second")


def storage_uri(release: Release) -> str:
    """The release's prefix with its trailing ``/``.

    Raises:
        DeployError: the release is not in a bucket (KServe's storage initializer cannot reach a local folder).
    """
    if not release.uri.startswith(("s3://", "gs://")):
        raise DeployError(
            f"KServe downloads the release from a bucket, and {release.uri} is not one; "
            "make the release under s3:// or gs:// (`nexus release create --root s3://...`)"
        )
    return release.uri + "/"


def s3_annotations(settings: KServeSettings) -> dict[str, str]:
    """``serving.kserve.io/s3-*``: endpoint as host[:port], https and TLS verification as "1"/"0", region."""
    endpoint, https = "s3.amazonaws.com", True
    if settings.s3_endpoint_url:
        parts = urlsplit(
            settings.s3_endpoint_url if "://" in settings.s3_endpoint_url else f"https://{settings.s3_endpoint_url}"
        )
        endpoint, https = parts.netloc, parts.scheme == "https"
    found = {
        f"{_ANNOTATION}s3-endpoint": endpoint,
        f"{_ANNOTATION}s3-usehttps": "1" if https else "0",
        f"{_ANNOTATION}s3-verifyssl": "1" if settings.s3_verify_ssl else "0",
    }
    if settings.s3_region:
        found[f"{_ANNOTATION}s3-region"] = settings.s3_region
    return found


def shm_bytes(release: Release, gpus: int) -> int:
    """Bytes of `/dev/shm`: :func:`nexus.deploy.sizing.shm_size_bytes`, as `nexus deploy k8s` sizes it."""
    return sizing.shm_size_bytes(list(release.models), gpus)


def _gpus(release: Release, settings: KServeSettings) -> int:
    return settings.gpus if settings.gpus is not None else sizing.default_gpus(list(release.models))


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return http_probe(path, RUNTIME_HTTP_PORT, period, failures, timeout=3)


def _model(release: Release, settings: KServeSettings) -> dict[str, Any]:
    gpus = _gpus(release, settings)
    models = list(release.models)
    memory = settings.memory or sizing.quantity(sizing.memory_request(models, gpus, shm_bytes(release, gpus)))
    cpu = settings.cpu or f"{sizing.cpu_request_millis(models, gpus)}m"
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton", "version": "2"},
        "runtime": RUNTIME,
        "protocolVersion": "v2",
        "storageUri": storage_uri(release),
        "image": settings.image,
        "args": [
            "--strict-readiness=true",
            f"--exit-timeout-secs={settings.exit_timeout_s}",
            "--metrics-config=summary_latencies=true",
            f"--backend-config=python,shm-default-byte-size={sizing.shm_region_bytes(models)}",
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        # model loads after the storage initializer's copy: up to 10 minutes before liveness counts
        "startupProbe": _probe(READY_PATH, 5, 120),
        "readinessProbe": _probe(READY_PATH, 5, 2),
        "livenessProbe": _probe(LIVE_PATH, 10, 3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],  # noqa: S108 - the pod's own shared memory
    }
    if settings.mode == "Standard" and settings.prestop_s:
        model["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.prestop_s}}}
    return model


def render_inference_service(release: Release, settings: KServeSettings) -> dict[str, Any]:
    settings.validate()
    shm = settings.shm_size or sizing.quantity(shm_bytes(release, _gpus(release, settings)))
    predictor: dict[str, Any] = {
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "serviceAccountName": settings.name,
        "labels": pod_labels(settings.name, release.id),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": _model(release, settings),
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}],
    }
    if settings.mode == "Standard":
        predictor["deploymentStrategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        predictor["terminationGracePeriodSeconds"] = settings.prestop_s + settings.exit_timeout_s + 5
    annotations = {f"{_ANNOTATION}deploymentMode": settings.mode}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(settings.name, annotations),
        "spec": {"predictor": predictor},
    }


def secret_name(settings: KServeSettings) -> str:
    return f"{settings.name}-storage"


def render_credentials(release: Release, settings: KServeSettings) -> list[dict[str, Any]]:
    """The ServiceAccount and its storage Secret (annotations only; keys from :func:`secret_generator`)."""
    s3 = release.uri.startswith("s3://")
    annotations = s3_annotations(settings) if s3 else {}
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(settings.name, annotations),
        "secrets": [{"name": secret_name(settings)}],
    }
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(secret_name(settings), annotations, app=settings.name),
        "type": "Opaque",
    }
    return [account, secret]


def secret_generator(release: Release, settings: KServeSettings) -> dict[str, Any]:
    """The kustomization's ``secretGenerator`` entry that merges the keys into the rendered Secret."""
    source = {"envs": [S3_CREDENTIALS_FILE]} if release.uri.startswith("s3://") else {"files": [GCS_CREDENTIALS_FILE]}
    return {"name": secret_name(settings), "behavior": "merge", **source}


def render_kserve(release: Release, settings: KServeSettings) -> list[dict[str, Any]]:
    """ServiceAccount, Secret (no data) and InferenceService for ``release``, in apply order.

    Raises:
        DeployError: settings out of range, or a release that is not in a bucket.
    """
    isvc = render_inference_service(release, settings)
    return [*render_credentials(release, settings), isvc]


def credentials_files(release: Release) -> tuple[str, dict[str, str]]:
    """The git-ignored file the Secret's keys come from, and the files written beside the objects for it:
    a `.gitignore` that keeps it out of git, and for S3 an example with the key names and no values."""
    if release.uri.startswith("s3://"):
        example = "".join(f"{key}=\n" for key in S3_CREDENTIAL_KEYS)
        return S3_CREDENTIALS_FILE, {
            ".gitignore": f"{S3_CREDENTIALS_FILE}\n",
            f"{S3_CREDENTIALS_FILE}.example": example,
        }
    return GCS_CREDENTIALS_FILE, {".gitignore": f"{GCS_CREDENTIALS_FILE}\n"}

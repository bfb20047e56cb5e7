"""The Deployment of a release: the Triton pod and how Kubernetes rolls it.

How a pod leaves without failing a request (the order Kubernetes follows on a rollout or a drain):
the pod is marked terminating and taken out of the Service's endpoints; the preStop ``sleep`` keeps
Triton serving while every proxy hears of it (the pause is longer than the readiness reaction, so a
pod that stopped being ready is out of rotation too); then SIGTERM, and Triton waits up to
``--exit-timeout-secs`` for the requests in flight. ``terminationGracePeriodSeconds`` covers all three.
A new pod takes traffic only once `/v2/health/ready` answers (``--strict-readiness``: every model
loaded), and ``maxUnavailable: 0`` keeps the old pods until then.
"""

from __future__ import annotations

from typing import Any

from nexus.deploy import sizing
from nexus.deploy.k8s_settings import TRITON_UID, K8sSettings
from nexus.deploy.labels import PORTS, RELEASE_LABEL, http_probe
from nexus.deploy.triton_args import API_KEY_ENV, release_repository, triton_args
from nexus.errors import DeployError
from nexus.release import Release
from nexus.serving.admin import LIVE_PATH, READY_PATH
from nexus.storage import parse_storage_uri

RELEASE_URI_ANNOTATION = "nexusml.io/release-uri"
GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = "dshm"
GCS_VOLUME = "storage-credentials"
GCS_MOUNT = "/var/run/secrets/nexusml/storage"


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return http_probe(path, "http", period, failures, timeout=2)


def pod_sizes(release: Release, settings: K8sSettings) -> dict[str, Any]:
    """GPUs, `/dev/shm`, the shared-memory region and the resource requests of one pod."""
    models = list(release.models)
    gpus = settings.gpus if settings.gpus is not None else sizing.default_gpus(models)
    shm = sizing.shm_size_bytes(models, gpus)
    return {
        "gpus": gpus,
        "region": sizing.shm_region_bytes(models),
        "shm": settings.shm_size or sizing.quantity(shm),
        "cpu": settings.cpu or f"{sizing.cpu_request_millis(models, gpus)}m",
        "memory": settings.memory or sizing.quantity(sizing.memory_request(models, gpus, shm)),
    }


def container_args(release: Release, settings: K8sSettings) -> list[str]:
    """The container's ``args``: :func:`nexus.deploy.triton_args.triton_args` for the release."""
    return triton_args(
        release_repository(release.uri, settings.s3_endpoint),
        exit_timeout=settings.exit_timeout,
        shm_region_bytes=pod_sizes(release, settings)["region"],
    )


def _storage(release: Release, settings: K8sSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The env entries and volumes that give Triton the bucket's credentials (references only)."""
    scheme = parse_storage_uri(release.uri).scheme
    if scheme not in ("s3", "gs"):
        raise DeployError(
            f"release {release.id} is under {release.root}, a folder pods cannot read; "
            "make the release under s3:// or gs:// (`nexus release create --root s3://bucket/releases`)"
        )
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if scheme == "s3" and settings.s3_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": settings.s3_region})
    secret = settings.credentials_secret
    if secret and scheme == "s3":
        env += [_secret_env(k, secret, k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    elif secret:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_MOUNT}/credentials.json"})
        volumes.append({"name": GCS_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}})
    return env, volumes


def deployment(release: Release, settings: K8sSettings) -> dict[str, Any]:
    """The Deployment running ``settings.replicas`` Tritons on the release's prefix."""
    sizes = pod_sizes(release, settings)
    storage_env, storage_volumes = _storage(release, settings)
    env = [*storage_env, _secret_env(API_KEY_ENV, settings.api_key_secret, settings.api_key_secret_key)]
    limits: dict[str, Any] = {"memory": sizes["memory"]}
    if sizes["gpus"]:
        limits[GPU_RESOURCE] = sizes["gpus"]
    mounts: list[dict[str, Any]] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]  # noqa: S108
    if storage_volumes:
        mounts.append({"name": GCS_VOLUME, "mountPath": GCS_MOUNT, "readOnly": True})
    container = {
        "name": "triton",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": container_args(release, settings),
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
        "env": env,
        "resources": {"requests": {"cpu": sizes["cpu"], "memory": sizes["memory"]}, "limits": limits},
        "startupProbe": _probe(READY_PATH, 5, -(-settings.startup_timeout // 5)),
        "readinessProbe": {
            **_probe(READY_PATH, settings.readiness_period, settings.readiness_failures),
            "successThreshold": 1,
        },
        "livenessProbe": _probe(LIVE_PATH, 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": settings.prestop_seconds}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": settings.name,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "fsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": sizes["shm"]}},
            *storage_volumes,
        ],
        # spread replicas over nodes where the cluster can: one node's loss takes one replica
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": settings.selector()},
            }
        ],
    }
    if sizes["gpus"]:
        # GPU node pools are commonly tainted so that only pods asking for GPUs land there
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": settings.metadata(),
        "spec": {
            "replicas": settings.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": settings.startup_timeout + 120,
            "selector": {"matchLabels": settings.selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**settings.labels(), RELEASE_LABEL: release.id},
                    "annotations": {RELEASE_URI_ANNOTATION: release.uri},
                },
                "spec": pod_spec,
            },
        },
    }

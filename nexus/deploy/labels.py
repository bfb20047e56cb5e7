"""The names, labels and ports every rendered object shares (shared by `nexus deploy k8s` and `nexus deploy kserve`).

Every object is labelled :func:`object_labels`; pod templates also get the release
(:func:`pod_labels`); selectors use only :func:`selector`, so a pod of any release matches.
"""

from __future__ import annotations

from typing import Any

#: The app name when none is given (`--name`).
DEFAULT_NAME = "nexus-triton"
#: The image `docker compose build` makes from triton/Dockerfile (Triton 2.51 with torch for the Python
#: backend): push it where the cluster pulls from, or pass `--image`.
DEFAULT_IMAGE = "nexusml/triton:24.10"
PART_OF = "nexusml"
MANAGED_BY = "nexus"
#: The pod-template label naming the release a pod serves.
RELEASE_LABEL = "nexusml.io/release"

#: Triton's container ports, by the names the Deployment, the Service and the monitors use.
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT}


def http_probe(path: str, port: int | str, period: int, failures: int, timeout: int) -> dict[str, Any]:
    """A probe that GETs ``path`` on ``port`` (a number, or a container port's name)."""
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def object_labels(name: str) -> dict[str, str]:
    return {**selector(name), "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": MANAGED_BY}


def pod_labels(name: str, release_id: str) -> dict[str, str]:
    return {**object_labels(name), RELEASE_LABEL: release_id}


def metadata(name: str, annotations: dict[str, str] | None = None, app: str | None = None) -> dict[str, object]:
    """`metadata` of an object called ``name`` of the app ``app`` (default: ``name``)."""
    meta: dict[str, object] = {"name": name, "labels": object_labels(app or name)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta

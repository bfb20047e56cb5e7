"""The CRD schemas `nexus deploy` checks its custom resources against, before it writes them.

They are vendored, unmodified, in `tests/data/k8s-schemas/` (with their provenance and license); a
wheel carries copies (`setup.py`'s build rule, :func:`nexus.shipped.shipped`). Only the files the
objects at hand need are read: KServe's InferenceService CRD alone is 2 MB of YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nexus.deploy.validate import load_crds
from nexus.shipped import shipped

FOLDER = "tests/data/k8s-schemas"
#: (apiVersion, kind) -> the CRD file that defines it.
CRD_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def crds_for(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The tightened schemas (:func:`nexus.deploy.validate.load_crds`) of the custom kinds among ``objects``."""
    keys = {(str(o.get("apiVersion")), str(o.get("kind"))) for o in objects}
    files = sorted({CRD_FILES[k] for k in keys if k in CRD_FILES})
    return load_crds(shipped(f"{FOLDER}/{name}") for name in files)

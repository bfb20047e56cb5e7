"""The deployment folders `nexus deploy` writes: a release's objects, validated, as a kustomize base to commit.

:func:`write_k8s` is `nexus deploy k8s` and :func:`write_kserve` is `nexus deploy kserve`, from Python.
"""

from __future__ import annotations

from pathlib import Path

from nexus.deploy.autoscale import ADAPTER_VALUES_FILE, AutoscaleSettings, adapter_helm_values
from nexus.deploy.k8s import K8sSettings, render_k8s
from nexus.deploy.kserve import KServeSettings, credentials_files, render_kserve, secret_generator
from nexus.deploy.kustomize import WrittenBase, to_yaml, write_base
from nexus.deploy.record import DeployRecord
from nexus.release import Release


def write_k8s(
    release: Release, folder: Path, settings: K8sSettings | None = None, autoscale: AutoscaleSettings | None = None
) -> WrittenBase:
    """Render ``release`` for plain Kubernetes into ``folder``: with ``autoscale``, the HPA and its monitor too,
    and the prometheus-adapter values beside the base (cluster configuration, not one of its resources).

    Raises:
        ManifestInvalidError: an object does not validate (nothing is written).
        DeployError: bad settings, a release pods cannot read, or a file in ``folder`` nexus did not write.
    """
    objects = render_k8s(release, settings, autoscale=autoscale)
    extra = {ADAPTER_VALUES_FILE: to_yaml(adapter_helm_values())} if autoscale is not None else {}
    return write_base(folder, objects, DeployRecord.for_release(release, "k8s"), extra_files=extra)


def write_kserve(release: Release, folder: Path, settings: KServeSettings | None = None) -> WrittenBase:
    """Render ``release`` as a KServe InferenceService into ``folder``, with the git-ignored credentials file's
    `.gitignore` (and an example) beside it; returns what was written.

    Raises:
        ManifestInvalidError: an object does not validate (nothing is written).
        DeployError: bad settings, a release not in a bucket, or a file in ``folder`` nexus did not write.
    """
    settings = settings or KServeSettings()
    _, extra = credentials_files(release)
    return write_base(
        folder,
        render_kserve(release, settings),
        DeployRecord.for_release(release, "kserve"),
        extra_files=extra,
        generators=[secret_generator(release, settings)],
    )

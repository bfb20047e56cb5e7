"""`nexus deploy k8s|kserve`: render a release as a folder of validated Kubernetes objects to commit and apply."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nexus.cli.context import handles_errors, project
from nexus.cli.output import stdout
from nexus.deploy.labels import DEFAULT_IMAGE, DEFAULT_NAME

if TYPE_CHECKING:
    from nexus.deploy.kustomize import WrittenBase
    from nexus.registry import Project
    from nexus.release import Release

app = typer.Typer(
    name="deploy",
    help="Render a release as Kubernetes objects in a folder to commit and apply.\n\n"
    "Example: nexus deploy k8s latest --namespace ml",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ReleaseArg = Annotated[str, typer.Argument(help="Release id, a unique prefix of one, or 'latest'.", show_default=False)]
RootOpt = Annotated[
    str | None, typer.Option(help="Releases root (default: [release] root in .nexusrc, else releases/).")
]
NameOpt = Annotated[str, typer.Option(help="Name of every object, and the selector's label.")]
ImageOpt = Annotated[str, typer.Option(help="Triton image (triton/Dockerfile's, pushed where the cluster pulls).")]
GpusOpt = Annotated[
    int | None, typer.Option(help="GPUs per pod; 0: CPU only. [default: 1 if a model's kind is gpu or auto]")
]
CpuOpt = Annotated[str | None, typer.Option(help="CPU request (e.g. 4); default from the models.")]
MemoryOpt = Annotated[str | None, typer.Option(help="Memory request and limit (e.g. 8Gi); default from the models.")]
ShmOpt = Annotated[str | None, typer.Option(help="/dev/shm size (e.g. 1Gi); default from the models.")]  # noqa: S108
MinOpt = Annotated[int, typer.Option(help="Fewest pods the autoscaler keeps.")]
MaxOpt = Annotated[int, typer.Option(help="Most pods the autoscaler makes.")]
ExitOpt = Annotated[int, typer.Option(help="Seconds Triton waits for requests in flight on SIGTERM.")]
S3RegionOpt = Annotated[str | None, typer.Option(help="The bucket's region.")]


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _release(proj: Project, ref: str, root: str | None) -> Release:
    from nexus.release import find_release

    return find_release(proj, ref, root)


def _print_written(found: Release, written: WrittenBase, secrets: list[str], *, local_files: list[str]) -> None:
    console = stdout()
    folder = _shown(written.folder)
    console.print(f"Rendered release {found.id} ({found.uri}) into {folder}:", highlight=False)
    for file in written.files:
        console.print(f"  {file}", highlight=False)
    for file in written.removed:
        console.print(f"  removed {file} (no longer rendered)", highlight=False)
    console.print("Every object was validated against its schema (Kubernetes 1.35, the vendored CRDs).")
    if secrets:
        console.print(f"The pods read the Secrets {', '.join(secrets)}; create them in the namespace (never rendered).")
    for file in local_files:
        console.print(f"Put the keys in {folder}/{file} (git-ignored) before applying.", highlight=False)
    console.print("Commit the folder, then apply it (a new release rolls out the same way):", highlight=False)
    console.print(f"  kubectl apply -k {folder}", highlight=False)


@app.command("k8s")
@handles_errors
def k8s(
    release: ReleaseArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the base, relative to the project.")] = Path(
        "deploy/k8s"
    ),
    root: RootOpt = None,
    name: NameOpt = DEFAULT_NAME,
    namespace: Annotated[str | None, typer.Option(help="Namespace set on every object.")] = None,
    image: ImageOpt = DEFAULT_IMAGE,
    replicas: Annotated[
        int | None, typer.Option(help="A fixed number of pods, and no autoscaler. [default: autoscaled]")
    ] = None,
    min_replicas: MinOpt = 2,
    max_replicas: MaxOpt = 8,
    target_queue_ms: Annotated[
        float | None,
        typer.Option(help="Queue time per request the autoscaler holds. [default: 10 ms, +50 for window batching]"),
    ] = None,
    monitor: Annotated[str, typer.Option(help="PodMonitor or ServiceMonitor (prometheus-operator).")] = "PodMonitor",
    gpus: GpusOpt = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    shm_size: ShmOpt = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint as the pods reach it (http://minio.storage:9000); none: AWS S3.")
    ] = None,
    s3_region: S3RegionOpt = None,
    credentials_secret: Annotated[
        str,
        typer.Option(help="Secret with the bucket's credentials (by name only); '': the pods' own identity."),
    ] = "nexus-storage-credentials",  # noqa: S107 - a Secret's name
    api_key_secret: Annotated[
        str, typer.Option(help="Secret holding the model-repository API key, as NAME or NAME:KEY.")
    ] = "nexus-api-key:key",  # noqa: S107 - a Secret's name and key
    exit_timeout: ExitOpt = 30,
    prestop: Annotated[
        int | None, typer.Option(help="preStop pause in seconds. [default: readiness reaction + 5]")
    ] = None,
    metrics_namespace: Annotated[
        list[str] | None, typer.Option(help="Namespace (Prometheus') also allowed to scrape metrics; repeat.")
    ] = None,
) -> None:
    """Render RELEASE as a kustomize base: Deployment, Service, autoscaler, ..., validated against Kubernetes 1.35."""
    from nexus.deploy.autoscale import ADAPTER_VALUES_FILE, AutoscaleSettings
    from nexus.deploy.folders import write_k8s
    from nexus.deploy.k8s import K8sSettings

    proj = project()
    found = _release(proj, release, root)
    secret_name, _, secret_key = api_key_secret.partition(":")
    settings = K8sSettings(
        name=name,
        namespace=namespace,
        image=image,
        replicas=replicas if replicas is not None else min_replicas,
        gpus=gpus,
        cpu=cpu,
        memory=memory,
        shm_size=shm_size,
        s3_endpoint=s3_endpoint,
        s3_region=s3_region,
        credentials_secret=credentials_secret or None,
        api_key_secret=secret_name,
        api_key_secret_key=secret_key or "key",
        exit_timeout=exit_timeout,
        prestop=prestop,
        metrics_namespaces=tuple(metrics_namespace or ()),
    )
    autoscale = None
    if replicas is None:
        target_us = round(target_queue_ms * 1000) if target_queue_ms is not None else None
        autoscale = AutoscaleSettings(
            min_replicas=min_replicas, max_replicas=max_replicas, target_queue_us=target_us, monitor=monitor
        )
    written = write_k8s(found, out if out.is_absolute() else proj.root / out, settings, autoscale)
    secrets = [s for s in (settings.credentials_secret, settings.api_key_secret) if s]
    _print_written(found, written, secrets, local_files=[])
    if autoscale is not None:
        stdout().print(
            f"The autoscaler's metric needs prometheus-adapter with the rule in {ADAPTER_VALUES_FILE} "
            "(once per cluster; the file says how).",
            highlight=False,
        )


@app.command("kserve")
@handles_errors
def kserve(
    release: ReleaseArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write, relative to the project.")] = Path(
        "deploy/kserve"
    ),
    root: RootOpt = None,
    name: NameOpt = DEFAULT_NAME,
    mode: Annotated[str, typer.Option(help="Standard (plain Deployments, the default) or Knative.")] = "Standard",
    image: ImageOpt = DEFAULT_IMAGE,
    min_replicas: MinOpt = 2,
    max_replicas: MaxOpt = 8,
    gpus: GpusOpt = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    shm_size: ShmOpt = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint as the storage initializer reaches it; none: AWS S3.")
    ] = None,
    s3_region: S3RegionOpt = None,
    exit_timeout: ExitOpt = 30,
) -> None:
    """Render RELEASE as a KServe InferenceService on KServe's Triton runtime, validated against its CRD."""
    from nexus.deploy.folders import write_kserve
    from nexus.deploy.kserve import KServeSettings, credentials_files

    proj = project()
    found = _release(proj, release, root)
    settings = KServeSettings(
        name=name,
        mode=mode,
        image=image,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        gpus=gpus,
        cpu=cpu,
        memory=memory,
        shm_size=shm_size,
        s3_endpoint_url=s3_endpoint,
        s3_region=s3_region,
        exit_timeout_s=exit_timeout,
    )
    written = write_kserve(found, out if out.is_absolute() else proj.root / out, settings)
    _print_written(found, written, [], local_files=[credentials_files(found)[0]])

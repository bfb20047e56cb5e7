"""`nexus deploy`: render a release as a deployment folder to commit (`k8s`: a kustomize base)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nexus.cli.context import handles_errors, project
from nexus.cli.output import stdout

app = typer.Typer(
    name="deploy",
    help="Render a release as Kubernetes objects in a folder to commit and apply.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ReleaseArg = Annotated[str, typer.Argument(help="Release id, a unique prefix of one, or 'latest'.", show_default=False)]


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


@app.command("k8s")
@handles_errors
def k8s(
    release: ReleaseArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the base, relative to the project.")] = Path(
        "deploy/k8s"
    ),
    root: Annotated[
        str | None, typer.Option(help="Releases root (default: [release] root in .nexusrc, else releases/).")
    ] = None,
    name: Annotated[str, typer.Option(help="Name of every object, and the selector's label.")] = "nexus-triton",
    namespace: Annotated[str | None, typer.Option(help="Namespace set on every object.")] = None,
    image: Annotated[str, typer.Option(help="Triton image (triton/Dockerfile's).")] = "nexusml/triton:24.10",
    replicas: Annotated[int, typer.Option(help="Pods.")] = 2,
    gpus: Annotated[
        int | None, typer.Option(help="GPUs per pod; 0: CPU only. [default: 1 if a model's kind is gpu or auto]")
    ] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU request (e.g. 4); default from the models.")] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory request and limit (e.g. 8Gi); default from the models.")
    ] = None,
    shm_size: Annotated[
        str | None,
        typer.Option(help="/dev/shm size (e.g. 1Gi); default from the models."),  # noqa: S108 - not a file
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint as the pods reach it (http://minio.storage:9000); none: AWS S3.")
    ] = None,
    s3_region: Annotated[str | None, typer.Option(help="AWS_DEFAULT_REGION in the pods.")] = None,
    credentials_secret: Annotated[
        str,
        typer.Option(help="Secret with the bucket's credentials (by name only); '': the pods' own identity."),
    ] = "nexus-storage-credentials",  # noqa: S107 - a Secret's name
    api_key_secret: Annotated[
        str, typer.Option(help="Secret holding the model-repository API key, as NAME or NAME:KEY.")
    ] = "nexus-api-key:key",  # noqa: S107 - a Secret's name and key
    exit_timeout: Annotated[int, typer.Option(help="Seconds Triton waits for requests in flight on SIGTERM.")] = 30,
    prestop: Annotated[
        int | None, typer.Option(help="preStop pause in seconds. [default: readiness reaction + 5]")
    ] = None,
    metrics_namespace: Annotated[
        list[str] | None, typer.Option(help="Namespace (Prometheus') also allowed to scrape metrics; repeat.")
    ] = None,
) -> None:
    """Render RELEASE as a kustomize base (Deployment, Service, ...), validated against Kubernetes 1.35."""
    from nexus.deploy.k8s import K8sSettings, render_k8s
    from nexus.deploy.kustomize import write_base
    from nexus.deploy.record import DeployRecord
    from nexus.release import find_release

    proj = project()
    found = find_release(proj, release, root)
    secret_name, _, secret_key = api_key_secret.partition(":")
    settings = K8sSettings(
        name=name,
        namespace=namespace,
        image=image,
        replicas=replicas,
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
    folder = out if out.is_absolute() else proj.root / out
    written = write_base(folder, render_k8s(found, settings), DeployRecord.for_release(found, "k8s"))
    console = stdout()
    console.print(f"Rendered release {found.id} ({found.uri}) into {_shown(folder)}:", highlight=False)
    for file in written.files:
        console.print(f"  {file}", highlight=False)
    for file in written.removed:
        console.print(f"  removed {file} (no longer rendered)", highlight=False)
    secrets = [s for s in (settings.credentials_secret, settings.api_key_secret) if s]
    console.print(f"It reads the Secrets {', '.join(secrets)} (create them in the namespace; never rendered).")
    console.print("Commit the folder, then apply it (a new release rolls out the same way):", highlight=False)
    console.print(f"  kubectl apply -k {_shown(folder)}", highlight=False)

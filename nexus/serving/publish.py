"""`nexus publish`: render a stored version into a Triton model repository.

Layout written (one folder per model; several models and versions side by side)::

    <repository>/
      <model>/
        config.pbtxt          # serves exactly the version that is published (version_policy.specific)
        <N>/                  # N = the version's integer from .nexus_meta.json
          model.py            # model_repository_templates/python_backend/model.py, unchanged
          model.<ext>         # the artifact, verified against its sha256

A local publish builds `<N>/` in a hidden temporary folder next to it and renames it into place,
then replaces `config.pbtxt` atomically, so a reader never sees a half-written version. A publish to
`s3://` or `gs://` uploads the same layout, `config.pbtxt` last.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nexus.atomic import disk_full_as_error, is_disk_full
from nexus.errors import PublishError
from nexus.registry import Project
from nexus.registry.metadata import EXTENSIONS, ModelVersion
from nexus.registry.signature import check_signature
from nexus.serving.model_config import (
    ServingOptions,
    SignatureError,
    config_to_text,
    parse_config,
    render_config,
)
from nexus.settings import StorageSettings
from nexus.shipped import shipped
from nexus.storage import Storage, open_storage, parse_storage_uri
from nexus.tensors import Signature

MODEL_PY = "model.py"
CONFIG = "config.pbtxt"


@dataclass(frozen=True)
class PublishResult:
    model_name: str
    version: ModelVersion
    #: The local folder, or the bucket URI, written to.
    repository: Path | str
    #: What to give `tritonserver --model-repository` to serve it.
    triton_repository: str
    config_text: str
    #: Paths relative to the repository, in the order they are written.
    files: list[str]
    written: bool


def template_source() -> str:
    """The text of the Python-backend `model.py` that every published version gets."""
    return shipped(f"model_repository_templates/python_backend/{MODEL_PY}").read_text(encoding="utf-8")


def resolve_signature(version: ModelVersion, signature: Signature | None) -> Signature:
    """The signature given, else the one recorded at store time."""
    if signature is not None:
        return signature
    if version.signature is None:
        raise SignatureError(
            f"{version.model_name} v{version.version} is {version.format}, which records no input/output "
            "signature; pass --input NAME:DTYPE:DIMS and --output NAME:DTYPE:DIMS (dims without the batch)"
        )
    return version.signature


def publish(
    project: Project,
    model_name: str,
    *,
    version: int | None = None,
    commit: str | None = None,
    repository: Path | str | None = None,
    options: ServingOptions | None = None,
    signature: Signature | None = None,
    dry_run: bool = False,
) -> PublishResult:
    """Render ``model_name`` (latest by default) into a Triton model repository folder."""
    options = options or ServingOptions()
    v = project.resolve(model_name, version, commit)
    signature = resolve_signature(v, signature)
    artifact_name = f"model.{EXTENSIONS[v.format]}"
    config = render_config(model_name, v, signature, options, artifact_name)
    text = config_to_text(config)
    if parse_config(text) != config:  # pragma: no cover - protobuf round trip; guards against a broken install
        raise PublishError("config.pbtxt does not parse back to what was rendered; reinstall tritonclient")
    target = str(repository) if repository is not None else project.config.publish.repository
    location = parse_storage_uri(target)
    remote = None if location.scheme == "file" else open_storage(target, project.config.storage, project.root)
    repo: Path | str = target
    if remote is None:
        local = Path(location.bucket).expanduser()
        repo = local if local.is_absolute() else project.root / local
    files = [
        f"{model_name}/{v.version}/{MODEL_PY}",
        f"{model_name}/{v.version}/{artifact_name}",
        f"{model_name}/{CONFIG}",
    ]

    cached = project.cached_artifact(v)
    check_signature(cached, v.format, signature, options.batching)
    triton_path = str(repo) if remote is None else triton_repository_path(target, project.config.storage)
    if dry_run:
        return PublishResult(model_name, v, repo, triton_path, text, files, written=False)
    if remote is None:
        needed = v.size + len(template_source().encode()) + len(text.encode())
        with disk_full_as_error(Path(repo), needed, "pass another --repository"):
            _write_local(project, Path(repo), model_name, v, artifact_name, text)
    else:
        _write_remote(remote, cached, files, text)
    return PublishResult(model_name, v, repo, triton_path, text, files, written=True)


def triton_repository_path(uri: str, settings: StorageSettings) -> str:
    """How Triton names a bucket repository: with a custom S3 endpoint, `s3://http://host:port/bucket/prefix`."""
    location = parse_storage_uri(uri)
    same_store = parse_storage_uri(settings.uri).scheme == location.scheme
    if location.scheme == "s3" and same_store and settings.endpoint_url:
        path = "/".join(p for p in (location.bucket, location.prefix) if p)
        return f"s3://{settings.endpoint_url.rstrip('/')}/{path}"
    return uri


def _write_remote(storage: Storage, artifact: Path, files: list[str], text: str) -> None:
    """Upload model.py and the artifact, then config.pbtxt last: Triton never sees a config without its files."""
    model_py_key, artifact_key, config_key = files
    with tempfile.TemporaryDirectory(prefix="nexus-publish-") as tmp:
        model_py = Path(tmp) / MODEL_PY
        model_py.write_text(template_source(), encoding="utf-8")
        config = Path(tmp) / CONFIG
        config.write_text(text, encoding="utf-8")
        storage.put_file(model_py_key, model_py, overwrite=True)
        storage.put_file(artifact_key, artifact, overwrite=True)
        storage.put_file(config_key, config, overwrite=True)


def _write_local(project: Project, repo: Path, model_name: str, v: ModelVersion, artifact: str, text: str) -> None:
    model_dir = repo / model_name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".nexus-{v.version}-", dir=model_dir))
    except OSError as e:
        if is_disk_full(e):
            raise
        raise PublishError(f"cannot write to {repo}: {e.strerror}; choose a writable --repository") from e
    try:
        (staging / MODEL_PY).write_text(template_source(), encoding="utf-8")
        project.cache.copy_out(v.sha256, v.size, staging / artifact)
        staging.chmod(0o755)
        final = model_dir / str(v.version)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".nexus-old-{v.version}-", dir=model_dir))
            final.rename(old / "v")
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
        from nexus.atomic import atomic_write_text

        atomic_write_text(model_dir / CONFIG, text)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""The Triton model repository a project publishes to and serves from: a local folder or a bucket prefix.

It is resolved once, from `--repository` or `[publish] repository` in `.nexusrc`, into a
:class:`ModelRepository` that publish, serve, status and hot swap are handed. Layout::

    <repository>/
      <model>/
        config.pbtxt          # serves exactly the version that is published (version_policy.specific)
        <N>/                  # N = the version's integer from .nexus_meta.json
          model.py            # model_repository_templates/python_backend/model.py, unchanged
          model.<ext>         # the artifact, verified against its sha256

A local version folder is built in a hidden temporary folder beside it and renamed into place, then
`config.pbtxt` is replaced atomically, so a reader never sees half a version. A bucket gets the same
files, `config.pbtxt` last.

A repository that is (or lies inside) an immutable release, a prefix holding :data:`RELEASE_MANIFEST`
(:mod:`nexus.release`), is never written: :meth:`ModelRepository.write_version` refuses it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

from nexus.atomic import atomic_write_text, disk_full_as_error, is_disk_full
from nexus.errors import ObjectMissingError, PublishError, ReleaseImmutableError
from nexus.serving.drift import Served
from nexus.serving.model_config import ServingOptions, parse_config, read_serving
from nexus.settings import StorageSettings
from nexus.shipped import shipped
from nexus.storage import Storage, open_storage, parse_storage_uri
from nexus.tensors import Signature

if TYPE_CHECKING:
    from nexus.registry import Project

MODEL_PY = "model.py"
CONFIG = "config.pbtxt"
#: The manifest at the top of an immutable release (:data:`nexus.release.manifest.MANIFEST` is this name).
RELEASE_MANIFEST = "nexus-release.json"


def template_source() -> str:
    """The text of the Python-backend `model.py` that every published version gets."""
    return shipped(f"model_repository_templates/python_backend/{MODEL_PY}").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Published:
    """What a repository's `config.pbtxt` for one model says: the version served, and how."""

    version: int | None
    options: ServingOptions
    signature: Signature
    #: The artifact (commit, sha256) the config records serving as :attr:`version` (None: it records none).
    served: Served | None = None


@dataclass(frozen=True)
class ModelRepository:
    """A resolved repository location."""

    #: The folder (absolute), or the bucket URI as given.
    location: Path | str
    #: What `tritonserver --model-repository` is given (`s3://http://host:port/...` with an endpoint).
    triton_path: str
    #: The bucket's storage; None for a local folder.
    storage: Storage | None = None
    #: Extra environment for Triton to reach the bucket (an emulator endpoint, for instance).
    env: dict[str, str] = field(default_factory=dict)
    #: Finds the release a bucket repository lies in (see :attr:`release`); set by :meth:`resolve`.
    release_probe: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def resolve(cls, project: Project, repository: ModelRepository | Path | str | None = None) -> ModelRepository:
        """The repository given (a folder, relative to the project root, or a bucket URI), else the configured one."""
        if isinstance(repository, ModelRepository):
            return repository
        target = str(repository) if repository is not None else project.config.publish.repository
        location = parse_storage_uri(target)
        if location.scheme == "file":
            folder = Path(location.bucket).expanduser()
            folder = folder if folder.is_absolute() else project.root / folder
            return cls(folder, str(folder))
        settings = project.config.storage
        env: dict[str, str] = {}
        if location.scheme == "gs" and parse_storage_uri(settings.uri).scheme == "gs" and settings.endpoint_url:
            env["CLOUD_STORAGE_EMULATOR_ENDPOINT"] = settings.endpoint_url
        storage = open_storage(target, settings, project.root)
        probe = partial(enclosing_release, target, settings, project.root)
        return cls(target, triton_repository_path(target, settings), storage, env, probe)

    @property
    def folder(self) -> Path | None:
        """The local folder; None for a bucket."""
        return self.location if isinstance(self.location, Path) else None

    def __str__(self) -> str:
        return str(self.location)

    @cached_property
    def release(self) -> str | None:
        """The immutable release this repository is, or lies inside (its folder or URI); None for a plain one."""
        if self.folder is not None:
            return _folder_release(self.folder)
        if self.release_probe is not None:
            return self.release_probe()
        held = self.storage is not None and self.storage.size(RELEASE_MANIFEST) is not None
        return str(self.location) if held else None

    def refuse_release(self) -> None:
        """Raise :class:`ReleaseImmutableError` if this repository is (inside) a release."""
        if self.release is not None:
            raise ReleaseImmutableError(self.release)

    # -- reading -----------------------------------------------------------------------------

    def read_text(self, key: str) -> str | None:
        """The text of ``key`` (`MODEL/config.pbtxt`), or None when it is not there."""
        if self.storage is None:
            path = Path(self.location) / key
            return path.read_text(encoding="utf-8") if path.is_file() else None
        buffer = io.BytesIO()
        try:
            self.storage.download(key, buffer)
        except ObjectMissingError:
            return None
        return buffer.getvalue().decode("utf-8")

    def read_published(self, model: str) -> Published | None:
        """The model's published config, or None when it was never published here."""
        text = self.read_text(f"{model}/{CONFIG}")
        if text is None:
            return None
        config = parse_config(text)
        options, signature = read_serving(config)
        version = next(iter(config.version_policy.specific.versions), None)
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        return Published(version, options, signature, Served.from_parameters(version, parameters))

    # -- writing -----------------------------------------------------------------------------

    @staticmethod
    def version_keys(model: str, version: int, artifact: str) -> list[str]:
        """The keys a version's publish writes, relative to the repository, in the order they are written."""
        return [f"{model}/{version}/{MODEL_PY}", f"{model}/{version}/{artifact}", f"{model}/{CONFIG}"]

    def write_version(
        self, model: str, version: int, artifact: str, cached: Path, copy_artifact: Callable[[Path], None], config: str
    ) -> None:
        """Write version ``version`` of ``model`` and its config, in the order of :meth:`version_keys`.

        Args:
            artifact: the artifact's file name in the version folder (`model.pt2`).
            cached: the verified artifact (uploaded as is to a bucket).
            copy_artifact: writes a verified copy of the artifact to the path it is given (local folders).
            config: the text of `config.pbtxt`.

        Raises:
            ReleaseImmutableError: the repository is an immutable release.
        """
        self.refuse_release()
        if self.storage is None:
            needed = cached.stat().st_size + len(template_source().encode()) + len(config.encode())
            with disk_full_as_error(Path(self.location), needed, "pass another --repository"):
                self._write_local(Path(self.location) / model, str(version), artifact, copy_artifact, config)
        else:
            self._write_remote(self.storage, cached, self.version_keys(model, version, artifact), config)

    @staticmethod
    def _write_local(
        model_dir: Path, version: str, artifact: str, copy_artifact: Callable[[Path], None], config: str
    ) -> None:
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".nexus-{version}-", dir=model_dir))
        except OSError as e:
            if is_disk_full(e):
                raise
            raise PublishError(
                f"cannot write to {model_dir.parent}: {e.strerror}; choose a writable --repository"
            ) from e
        try:
            (staging / MODEL_PY).write_text(template_source(), encoding="utf-8")
            copy_artifact(staging / artifact)
            staging.chmod(0o755)
            final = model_dir / version
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".nexus-old-{version}-", dir=model_dir))
                final.rename(old / "v")
                staging.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(final)
            atomic_write_text(model_dir / CONFIG, config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _write_remote(storage: Storage, artifact: Path, keys: list[str], config: str) -> None:
        """model.py and the artifact first, config.pbtxt last: Triton never sees a config without its files."""
        model_py_key, artifact_key, config_key = keys
        with tempfile.TemporaryDirectory(prefix="nexus-publish-") as tmp:
            model_py = Path(tmp) / MODEL_PY
            model_py.write_text(template_source(), encoding="utf-8")
            config_file = Path(tmp) / CONFIG
            config_file.write_text(config, encoding="utf-8")
            storage.put_file(model_py_key, model_py, overwrite=True)
            storage.put_file(artifact_key, artifact, overwrite=True)
            storage.put_file(config_key, config_file, overwrite=True)


def open_repository(project: Project, repository: ModelRepository | Path | str | None = None) -> ModelRepository:
    """:meth:`ModelRepository.resolve`, as a function."""
    return ModelRepository.resolve(project, repository)


def enclosing_release(target: str, settings: StorageSettings, project_root: Path) -> str | None:
    """The release ``target`` (a folder or bucket URI) is, or lies inside: the nearest prefix holding
    :data:`RELEASE_MANIFEST`, as a folder path or URI; None when there is none."""
    location = parse_storage_uri(target)
    if location.scheme == "file":
        folder = Path(location.bucket).expanduser()
        return _folder_release(folder if folder.is_absolute() else project_root / folder)
    parts = location.prefix.split("/") if location.prefix else []
    for depth in range(len(parts), -1, -1):
        uri = f"{location.scheme}://{'/'.join([location.bucket, *parts[:depth]])}"
        if open_storage(uri, settings, project_root).size(RELEASE_MANIFEST) is not None:
            return uri
    return None


def _folder_release(folder: Path) -> str | None:
    return next((str(d) for d in (folder, *folder.parents) if (d / RELEASE_MANIFEST).is_file()), None)


def triton_repository_path(uri: str, settings: StorageSettings) -> str:
    """How Triton names a bucket repository: with a custom S3 endpoint, `s3://http://host:port/bucket/prefix`."""
    location = parse_storage_uri(uri)
    same_store = parse_storage_uri(settings.uri).scheme == location.scheme
    if location.scheme == "s3" and same_store and settings.endpoint_url:
        path = "/".join(p for p in (location.bucket, location.prefix) if p)
        return f"s3://{settings.endpoint_url.rstrip('/')}/{path}"
    return uri

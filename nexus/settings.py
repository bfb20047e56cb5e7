"""Project settings: `.nexusrc` (TOML, git-tracked) overridden by `NEXUS_*` environment variables.

A `.nexusrc` looks like this::

    [storage]
    uri = "s3://ml-models/nexus"          # or "gs://bucket/prefix", "file:///abs/path", "relative/dir"
    endpoint_url = "http://127.0.0.1:9000" # optional: MinIO or another S3-compatible server
    region = "eu-west-1"                   # optional

    [publish]
    repository = ".nexus/model_repository" # or "s3://bucket/triton-repo", "gs://..."

    [release]
    root = "s3://ml-models/releases"       # where `nexus release create` writes; default the folder `releases`

It never holds credentials: those come from the environment and the cloud SDKs' own chains, and a
file that looks like it holds one is refused. Without a `.nexusrc` the store is the local folder
`.nexus/storage` in the repository, which needs no server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from nexus.atomic import atomic_write_text
from nexus.errors import ConfigError, CredentialInConfigError

CONFIG_FILE = ".nexusrc"
DEFAULT_STORAGE_URI = ".nexus/storage"

DEFAULT_REPOSITORY = ".nexus/model_repository"
DEFAULT_RELEASE_ROOT = "releases"

#: Environment variable -> (section, field) it overrides.
ENV_OVERRIDES = {
    "NEXUS_STORAGE": ("storage", "uri"),
    "NEXUS_ENDPOINT_URL": ("storage", "endpoint_url"),
    "NEXUS_REGION": ("storage", "region"),
    "NEXUS_REPOSITORY": ("publish", "repository"),
    "NEXUS_RELEASE_ROOT": ("release", "root"),
}

_SECRET_KEY = re.compile(r"secret|passw|token|credential|private.?key|access.?key|api.?key|session|auth", re.I)
_SECRET_VALUE = re.compile(
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"  # PEM keys, e.g. a pasted service-account JSON
    r"|\"private_key\""
    r"|^[a-z][a-z0-9+.-]*://[^/@\s]+:[^/@\s]+@",  # user:password@ in a URL
    re.I,
)


@dataclass(frozen=True)
class StorageSettings:
    """Where model binaries live.

    Attributes:
        uri: `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///abs/path` or a folder path
            (relative paths are relative to the repository root).
        endpoint_url: an S3-compatible endpoint (MinIO, moto) or a GCS API endpoint.
        region: the bucket's region, where the SDK cannot find it.
    """

    uri: str = DEFAULT_STORAGE_URI
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class PublishSettings:
    """Where `nexus publish` writes the Triton model repository.

    Attributes:
        repository: a folder (relative to the repository root) or `s3://` / `gs://` URI.
    """

    repository: str = DEFAULT_REPOSITORY


@dataclass(frozen=True)
class ReleaseSettings:
    """Where `nexus release` writes and finds immutable releases.

    Attributes:
        root: a folder (relative to the repository root) or `s3://` / `gs://` URI; each release is `<root>/<id>`.
    """

    root: str = DEFAULT_RELEASE_ROOT


_Settings = StorageSettings | PublishSettings | ReleaseSettings

#: `.nexusrc` section -> the settings class it fills.
SECTIONS: dict[str, type[StorageSettings] | type[PublishSettings] | type[ReleaseSettings]] = {
    "storage": StorageSettings,
    "publish": PublishSettings,
    "release": ReleaseSettings,
}


@dataclass(frozen=True)
class NexusConfig:
    """Everything NexusML reads from `.nexusrc` and the environment for one repository."""

    root: Path
    storage: StorageSettings = field(default_factory=StorageSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)
    #: Where the settings came from, for messages: the file, or "defaults".
    source: str = "defaults"


def load_config(root: Path, env: Mapping[str, str] | None = None) -> NexusConfig:
    """Read `<root>/.nexusrc` (if any) and apply `NEXUS_*` overrides from ``env``."""
    env = os.environ if env is None else env
    path = root / CONFIG_FILE
    sections: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    source = "defaults"
    if path.is_file():
        source = str(path)
        sections = _parse(path)
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sections[section][key] = env[var]
    return NexusConfig(
        root=root,
        storage=StorageSettings(**sections["storage"]),
        publish=PublishSettings(**sections["publish"]),
        release=ReleaseSettings(**sections["release"]),
        source=source,
    )


def write_config(
    root: Path, storage: StorageSettings, publish: PublishSettings | None = None, release: ReleaseSettings | None = None
) -> Path:
    """Write `<root>/.nexusrc` atomically and return its path. Validates like :func:`load_config`."""
    lines = ["# NexusML settings. Commit this file; never put credentials in it."]
    sections: list[tuple[str, _Settings | None]] = [("storage", storage), ("publish", publish), ("release", release)]
    for name, settings in sections:
        if settings is None:
            continue
        lines.append(f"[{name}]")
        for key, value in asdict(settings).items():
            if value is not None:
                _refuse_secret_value(f"{name}.{key}", value)
                lines.append(f"{key} = {json.dumps(value)}")  # a JSON string is a valid TOML basic string
    path = root / CONFIG_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _parse(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"not valid TOML ({e})", "fix the syntax or rerun `nexus init`") from e
    _refuse_secrets(str(path), data, prefix="")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        known = ", ".join(f"[{name}]" for name in SECTIONS)
        raise ConfigError(str(path), f"unknown section(s) {sorted(unknown)}", f"the known sections are {known}")
    sections: dict[str, dict[str, str]] = {}
    for name, cls in SECTIONS.items():
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(str(path), f"'{name}' must be a table", f"write it as a [{name}] section")
        allowed = {f.name for f in fields(cls)}
        unknown = set(section) - allowed
        if unknown:
            raise ConfigError(
                str(path), f"unknown key(s) {sorted(unknown)} in [{name}]", f"the known keys are {sorted(allowed)}"
            )
        for key, value in section.items():
            if not isinstance(value, str) or not value:
                raise ConfigError(str(path), f"{name}.{key} must be a non-empty string", "quote the value")
        sections[name] = dict(section)
    return sections


def _refuse_secrets(source: str, data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if _SECRET_KEY.search(key):
            raise CredentialInConfigError(source, name)
        if isinstance(value, Mapping):
            _refuse_secrets(source, value, prefix=f"{name}.")
        elif isinstance(value, str) and _SECRET_VALUE.search(value):
            raise CredentialInConfigError(source, name)


def _refuse_secret_value(source: str, value: str) -> None:
    if _SECRET_VALUE.search(value):
        raise CredentialInConfigError(source, source)

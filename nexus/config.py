"""Project settings: `.nexusrc` (TOML, git-tracked) overridden by `NEXUS_*` environment variables.

A `.nexusrc` looks like this::

    [storage]
    uri = "s3://ml-models/nexus"          # or "gs://bucket/prefix", "file:///abs/path", "relative/dir"
    endpoint_url = "http://127.0.0.1:9000" # optional: MinIO or another S3-compatible server
    region = "eu-west-1"                   # optional

It never holds credentials: those come from the environment and the cloud SDKs' own chains, and a
file that looks like it holds one is refused. Without a `.nexusrc` the store is the local folder
`.nexus/storage` in the repository, which needs no server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from nexus.atomic import atomic_write_text
from nexus.errors import ConfigError, CredentialInConfigError

CONFIG_FILE = ".nexusrc"
DEFAULT_STORAGE_URI = ".nexus/storage"

#: Environment variable -> field of :class:`StorageSettings` it overrides.
ENV_OVERRIDES = {
    "NEXUS_STORAGE": "uri",
    "NEXUS_ENDPOINT_URL": "endpoint_url",
    "NEXUS_REGION": "region",
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
class NexusConfig:
    """Everything NexusML reads from `.nexusrc` and the environment for one repository."""

    root: Path
    storage: StorageSettings = field(default_factory=StorageSettings)
    #: Where the settings came from, for messages: the file, or "defaults".
    source: str = "defaults"


def load_config(root: Path, env: Mapping[str, str] | None = None) -> NexusConfig:
    """Read `<root>/.nexusrc` (if any) and apply `NEXUS_*` overrides from ``env``."""
    env = os.environ if env is None else env
    path = root / CONFIG_FILE
    storage = StorageSettings()
    source = "defaults"
    if path.is_file():
        source = str(path)
        storage = _parse(path)
    overrides = {attr: env[var] for var, attr in ENV_OVERRIDES.items() if env.get(var)}
    storage = replace(storage, **overrides)
    return NexusConfig(root=root, storage=storage, source=source)


def write_config(root: Path, storage: StorageSettings) -> Path:
    """Write `<root>/.nexusrc` atomically and return its path. Validates like :func:`load_config`."""
    lines = ["# NexusML settings. Commit this file; never put credentials in it.", "[storage]"]
    for key in ("uri", "endpoint_url", "region"):
        value = getattr(storage, key)
        if value is not None:
            _refuse_secret_value(f"storage.{key}", value)
            lines.append(f"{key} = {json.dumps(value)}")  # a JSON string is a valid TOML basic string
    path = root / CONFIG_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _parse(path: Path) -> StorageSettings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"not valid TOML ({e})", "fix the syntax or rerun `nexus init`") from e
    _refuse_secrets(str(path), data, prefix="")
    unknown = set(data) - {"storage"}
    if unknown:
        raise ConfigError(str(path), f"unknown section(s) {sorted(unknown)}", "the known section is [storage]")
    section = data.get("storage", {})
    if not isinstance(section, dict):
        raise ConfigError(str(path), "'storage' must be a table", "write it as a [storage] section")
    allowed = {"uri", "endpoint_url", "region"}
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(
            str(path), f"unknown key(s) {sorted(unknown)} in [storage]", f"the known keys are {sorted(allowed)}"
        )
    for key, value in section.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(str(path), f"storage.{key} must be a non-empty string", "quote the value")
    return StorageSettings(**section)


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

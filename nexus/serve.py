"""`nexus serve`: bring the model repository up to date with `.nexus_meta.json`, then run Triton on it.

Each model's latest version is published unless the repository already serves it. A model that was
published before keeps its serving options (batch size, queue, instances, signature): they are
read back from its `config.pbtxt`.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.errors import NexusError
from nexus.publish import CONFIG, PublishResult, publish
from nexus.registry import Project
from nexus.storage import parse_storage_uri
from nexus.triton_config import SignatureError, parse_config, read_serving
from nexus.triton_server import TritonServer


class PortInUseError(NexusError, OSError):
    def __init__(self, host: str, port: int, option: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"port {port} on {host} is in use (another Triton or nexus serve?); stop it or pass {option} PORT"
        )


@dataclass
class SyncResult:
    """What `sync_latest` did to the repository, model by model."""

    published: list[PublishResult] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    #: (model, reason) for models that could not be published.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def local_repository(project: Project, repository: str | None) -> Path:
    """The model repository folder `nexus serve` runs Triton on (only local folders, for now)."""
    target = repository or project.config.publish.repository
    location = parse_storage_uri(target)
    if location.scheme != "file":
        raise NexusError(
            f"nexus serve runs on a local repository folder, not {target}; publish there with -r, "
            "or run tritonserver --model-repository on the bucket"
        )
    folder = Path(location.bucket).expanduser()
    return folder if folder.is_absolute() else project.root / folder


def sync_latest(project: Project, repository: Path) -> SyncResult:
    """Publish every model's latest version that the repository does not serve yet."""
    result = SyncResult()
    for name, record in sorted(project.read_metadata().models.items()):
        latest = record.current()
        config_path = repository / name / CONFIG
        if config_path.is_file():
            config = parse_config(config_path.read_text(encoding="utf-8"))
            if list(config.version_policy.specific.versions) == [latest.version]:
                result.up_to_date.append(name)
                continue
            options, signature = read_serving(config)
            inputs, outputs = signature.inputs, signature.outputs
        else:
            options, inputs, outputs = None, None, None
        try:
            result.published.append(
                publish(
                    project,
                    name,
                    version=latest.version,
                    repository=repository,
                    options=options,
                    inputs=inputs,
                    outputs=outputs,
                )
            )
        except SignatureError as e:
            result.skipped.append((name, str(e)))
    return result


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`PortInUseError` for the first port that cannot be bound."""
    for option, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                raise PortInUseError(host, port, option) from None


def loaded_models(server: TritonServer) -> list[dict[str, Any]]:
    """Triton's repository index: name, version and state of every model it knows."""
    request = urllib.request.Request(f"{server.url}/v2/repository/index", data=b"{}", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - the server we started
        index: list[dict[str, Any]] = json.loads(r.read())
        return index

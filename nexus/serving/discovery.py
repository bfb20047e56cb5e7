"""How the commands of a project find the `nexus serve` running for it, and the key to its admin API.

Two files in the project's private `.nexus/` folder (never committed)::

    .nexus/server.json   {"url", "grpc", "pid", "triton_pid", "repository"}: written when Triton is ready,
                         rewritten on a restart, removed when `nexus serve` stops
    .nexus/api_key       the model-repository API key (owner-only), unless $NEXUS_API_KEY is set
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nexus.atomic import atomic_write_text
from nexus.serving.admin import API_KEY_HEADER

if TYPE_CHECKING:
    from nexus.registry import Project
    from nexus.serving.repository import ModelRepository
    from nexus.serving.server import TritonServer

SERVER_FILE = "server.json"
API_KEY_FILE = "api_key"


@dataclass(frozen=True)
class ServerRecord:
    """The `nexus serve` running for a project, as `.nexus/server.json` records it."""

    url: str
    grpc: str
    pid: int
    triton_pid: int | None
    repository: str


def server_file(project: Project) -> Path:
    return project.root / ".nexus" / SERVER_FILE


def write_server_file(project: Project, server: TritonServer, repository: ModelRepository) -> Path:
    """Record the running server in `.nexus/server.json`, so publish and rollback can find it."""
    path = server_file(project)
    record = {
        "url": server.url,
        "grpc": f"{server.host}:{server.grpc_port}",
        "pid": os.getpid(),
        "triton_pid": server.pid,
        "repository": str(repository),
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def running_server(project: Project) -> ServerRecord | None:
    """`.nexus/server.json` if the `nexus serve` that wrote it still runs."""
    try:
        raw = json.loads(server_file(project).read_text(encoding="utf-8"))
        record = ServerRecord(
            str(raw["url"]), str(raw["grpc"]), int(raw["pid"]), raw.get("triton_pid"), str(raw["repository"])
        )
        os.kill(record.pid, 0)
    except (FileNotFoundError, ProcessLookupError, ValueError, KeyError, TypeError, PermissionError):
        return None
    return record


def find_server(project: Project) -> str | None:
    """The HTTP URL of the `nexus serve` running for this project, if there is one."""
    record = running_server(project)
    return record.url if record else None


def find_grpc_address(project: Project) -> str | None:
    """HOST:PORT of the gRPC endpoint of the `nexus serve` running for this project, if there is one."""
    record = running_server(project)
    return record.grpc if record else None


def find_triton_pid(project: Project, url: str) -> int | None:
    """The pid of the tritonserver that the `nexus serve` running for this project runs at ``url``."""
    record = running_server(project)
    if record is None or record.url != url.rstrip("/") or record.triton_pid is None:
        return None
    return int(record.triton_pid)


def api_key(project: Project) -> str:
    """The key that guards Triton's model-repository API: `$NEXUS_API_KEY`, else `.nexus/api_key`.

    The file is created on first use, readable by its owner only.
    """
    if key := os.environ.get("NEXUS_API_KEY"):
        return key
    path = project.root / ".nexus" / API_KEY_FILE
    path.parent.mkdir(exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key


def existing_api_key(project: Project) -> str | None:
    """The key as :func:`api_key` finds it, without making one: None when there is none yet."""
    if key := os.environ.get("NEXUS_API_KEY"):
        return key
    path = project.root / ".nexus" / API_KEY_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def restricted_api_args(key: str) -> list[str]:
    """tritonserver flags that refuse model-repository calls (HTTP and gRPC) without the key."""
    return [
        f"--http-restricted-api=model-repository:{API_KEY_HEADER}={key}",
        f"--grpc-restricted-protocol=model-repository:{API_KEY_HEADER}={key}",
    ]

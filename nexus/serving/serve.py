"""`nexus serve`: bring the model repository up to date with `.nexus_meta.json`, then run Triton on it.

Each model's latest version is published unless the repository already serves it. A model that was
published before keeps its serving options (batch size, queue, instances, signature): they are
read back from its `config.pbtxt`.
"""

from __future__ import annotations

import io
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.errors import HotSwapError, NexusError, ObjectMissingError, PortInUseError, SignatureError
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions, parse_config, read_serving
from nexus.serving.publish import CONFIG, PublishResult, publish, triton_repository_path
from nexus.serving.server import TritonError, TritonServer
from nexus.storage import Storage, open_storage, parse_storage_uri
from nexus.tensors import Signature


@dataclass
class SyncResult:
    """What `sync_latest` did to the repository, model by model."""

    published: list[PublishResult] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    #: (model, reason) for models that could not be published.
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelRepository:
    """The Triton model repository `nexus serve` runs on: a local folder, or a bucket prefix."""

    #: The folder (absolute), or the bucket URI as given.
    target: Path | str
    #: What `tritonserver --model-repository` is given (`s3://http://host:port/...` with an endpoint).
    triton_path: str
    #: The bucket's storage; None for a local folder.
    storage: Storage | None = None
    #: Extra environment for Triton to reach the bucket (an emulator endpoint, for instance).
    env: dict[str, str] = field(default_factory=dict)

    def read_text(self, key: str) -> str | None:
        """The text of ``key`` (`MODEL/config.pbtxt`), or None when it is not there."""
        if self.storage is None:
            path = Path(self.target) / key
            return path.read_text(encoding="utf-8") if path.is_file() else None
        buffer = io.BytesIO()
        try:
            self.storage.download(key, buffer)
        except ObjectMissingError:
            return None
        return buffer.getvalue().decode("utf-8")

    def __str__(self) -> str:
        return str(self.target)


def open_repository(project: Project, repository: str | None = None) -> ModelRepository:
    """The repository given, else `[publish] repository` from `.nexusrc`."""
    target = repository or project.config.publish.repository
    location = parse_storage_uri(target)
    if location.scheme == "file":
        folder = Path(location.bucket).expanduser()
        folder = folder if folder.is_absolute() else project.root / folder
        return ModelRepository(folder, str(folder))
    settings = project.config.storage
    env: dict[str, str] = {}
    if location.scheme == "gs" and parse_storage_uri(settings.uri).scheme == "gs" and settings.endpoint_url:
        env["CLOUD_STORAGE_EMULATOR_ENDPOINT"] = settings.endpoint_url
    storage = open_storage(target, settings, project.root)
    return ModelRepository(target, triton_repository_path(target, settings), storage, env)


@dataclass(frozen=True)
class Published:
    """What a repository's `config.pbtxt` for one model says: the version served, and how."""

    version: int | None
    options: ServingOptions
    signature: Signature


def read_published(repository: ModelRepository, model: str) -> Published | None:
    """The model's published config, or None when it was never published there."""
    text = repository.read_text(f"{model}/{CONFIG}")
    if text is None:
        return None
    config = parse_config(text)
    options, signature = read_serving(config)
    return Published(next(iter(config.version_policy.specific.versions), None), options, signature)


def sync_latest(project: Project, repository: ModelRepository) -> SyncResult:
    """Publish every model's latest version that the repository does not serve yet."""
    result = SyncResult()
    for name, record in sorted(project.read_metadata().models.items()):
        latest = record.current()
        published = read_published(repository, name)
        if published is not None and published.version == latest.version:
            result.up_to_date.append(name)
            continue
        try:
            result.published.append(
                publish(
                    project,
                    name,
                    version=latest.version,
                    repository=repository.target,
                    options=published.options if published else None,
                    signature=published.signature if published else None,
                )
            )
        except SignatureError as e:
            result.skipped.append((name, str(e)))
    return result


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`PortInUseError` for the first port that cannot be bound, or one given twice."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise NexusError(f"{seen[port]} and {option} are both {port}; give each a port of its own")
        seen[port] = option
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                raise PortInUseError(host, port, option) from None


def loaded_models(server: TritonServer, key: str | None = None) -> list[dict[str, Any]]:
    """Triton's repository index: name, version and state of every model it knows."""
    status, body = _http(f"{server.url}/v2/repository/index", "POST", b"{}", key=key)
    if status != 200:
        raise NexusError(f"Triton refused its repository index ({status}): {body.decode(errors='replace')}")
    index: list[dict[str, Any]] = json.loads(body)
    return index


API_KEY_FILE = "api_key"
#: The header Triton checks on its model-repository API (load, unload, index) when `nexus serve` runs it.
API_KEY_HEADER = "nexus-api-key"
#: gRPC clients send the key under this metadata name (Triton prefixes restricted-protocol keys).
GRPC_API_KEY_HEADER = f"triton-grpc-protocol-{API_KEY_HEADER}"


def api_key(project: Project) -> str:
    """The key that guards Triton's model-repository API: `$NEXUS_API_KEY`, else `.nexus/api_key`.

    The file is created on first use, readable by its owner only.
    """
    import os
    import secrets

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


def restricted_api_args(key: str) -> list[str]:
    """tritonserver flags that refuse model-repository calls (HTTP and gRPC) without the key."""
    return [
        f"--http-restricted-api=model-repository:{API_KEY_HEADER}={key}",
        f"--grpc-restricted-protocol=model-repository:{API_KEY_HEADER}={key}",
    ]


def _http(
    url: str, method: str = "GET", body: bytes | None = None, timeout: float = 30, key: str | None = None
) -> tuple[int, bytes]:
    headers = {API_KEY_HEADER: key} if key else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - a Triton URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError) as e:
        raise NexusError(f"cannot reach Triton at {url.split('/v2/')[0]} ({e}); start it with `nexus serve`") from e


def load_version(server: str, model: str, version: int, timeout: float = 300, key: str | None = None) -> None:
    """Ask Triton to (re)load ``model`` from its repository and wait until ``version`` is READY.

    Triton keeps serving the version it has until the new one has loaded; only then does the old one
    go. Raises :class:`HotSwapError` with Triton's reason if the load fails.
    """
    import time

    status, body = _http(f"{server}/v2/repository/models/{model}/load", "POST", b"{}", timeout=timeout, key=key)
    if status != 200:
        reason = json.loads(body or b"{}").get("error", body.decode(errors="replace"))
        raise HotSwapError(f"Triton could not load {model} v{version}: {reason}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http(f"{server}/v2/models/{model}/versions/{version}/ready")[0] == 200:
            return
        time.sleep(0.2)
    raise HotSwapError(f"{model} v{version} was not READY on {server} after {timeout:.0f}s")


SERVER_FILE = "server.json"


def write_server_file(project: Project, server: TritonServer, repository: ModelRepository) -> Path:
    """Record the running server in `.nexus/server.json`, so publish and rollback can find it."""
    import os

    from nexus.atomic import atomic_write_text

    path = project.root / ".nexus" / SERVER_FILE
    record = {
        "url": server.url,
        "grpc": f"{server.host}:{server.grpc_port}",
        "pid": os.getpid(),
        "triton_pid": server.pid,
        "repository": str(repository),
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def _server_record(project: Project) -> dict[str, Any] | None:
    """`.nexus/server.json` if the `nexus serve` that wrote it still runs."""
    import os

    path = project.root / ".nexus" / SERVER_FILE
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (FileNotFoundError, ProcessLookupError, ValueError, KeyError, PermissionError):
        return None
    return record


def find_server(project: Project) -> str | None:
    """The HTTP URL of the `nexus serve` running for this project, if there is one."""
    record = _server_record(project)
    return str(record["url"]) if record else None


def find_triton_pid(project: Project, url: str) -> int | None:
    """The pid of the tritonserver that the `nexus serve` running for this project runs at ``url``."""
    record = _server_record(project)
    if record is None or record.get("url") != url.rstrip("/") or record.get("triton_pid") is None:
        return None
    return int(record["triton_pid"])


def find_grpc_address(project: Project) -> str | None:
    """HOST:PORT of the gRPC endpoint of the `nexus serve` running for this project, if there is one."""
    record = _server_record(project)
    return str(record["grpc"]) if record and "grpc" in record else None


def swap(
    project: Project,
    model: str,
    version: int,
    server: str,
    repository: ModelRepository,
    options: ServingOptions | None = None,
    signature: Signature | None = None,
) -> PublishResult:
    """Publish ``version`` of ``model`` and switch the running server to it, with no failed request.

    The model keeps its serving options and signature unless new ones are given. Triton serves the
    old version until the new one is READY; then one smoke request must succeed. If the load or the
    smoke request fails, the previous version is published and loaded again, and
    :class:`HotSwapError` says why.
    """
    from nexus.errors import PredictError
    from nexus.serving.predict import predict

    kept = read_published(repository, model)
    if kept is not None:
        options = options or kept.options
        signature = signature or kept.signature
    result = publish(
        project, model, version=version, repository=repository.target, options=options, signature=signature
    )
    key = api_key(project)
    try:
        load_version(server, model, version, key=key)
        predict(model, server=server)
    except (HotSwapError, PredictError) as e:
        if kept is None or kept.version is None or kept.version == version:
            raise
        publish(
            project,
            model,
            version=kept.version,
            repository=repository.target,
            options=kept.options,
            signature=kept.signature,
        )
        load_version(server, model, kept.version, key=key)
        raise HotSwapError(f"{model} v{version} failed on {server} ({e}); v{kept.version} is served again") from e
    return result


#: `nexus serve` restarts a Triton that dies, but not more often than this in a minute.
RESTARTS_PER_MINUTE = 3
STUB = "triton_python_backend_stub"


def backend_stubs(triton_pid: int) -> dict[str, int]:
    """The Python-backend stubs of a Triton process: model instance name (`m_0_0`) -> stub pid.

    Read from /proc (Linux); the stub's command line carries its parent's pid and its instance name.
    """
    stubs: dict[str, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 8 and argv[0].endswith(STUB.encode()) and argv[5] == str(triton_pid).encode():
            stubs[argv[8].decode()] = int(proc.name)
    return stubs


def instance_model(instance: str) -> str:
    """`prod_model_0_1` (model, instance group, index) -> `prod_model`."""
    return instance.rsplit("_", 2)[0]


def failed_requests(server: str, model: str) -> int:
    """Triton's count of failed inference requests for ``model`` since it was loaded."""
    status, body = _http(f"{server}/v2/models/{model}/stats")
    if status != 200:
        return 0
    return sum(int(e["inference_stats"]["fail"]["count"]) for e in json.loads(body).get("model_stats", []))


def reload_model(server: TritonServer, model: str, key: str | None = None) -> tuple[int, bytes]:
    """Load ``model`` anew, so that Triton starts new Python-backend stubs for it: (status, body).

    Triton 2.51 skips a load request for a model it finds unchanged since it loaded it, so after a
    stub died a plain load is a no-op and the stub stays dead. The chaos suite found it: the first
    reload after a start works only because the first load writes `__pycache__` into the version
    folder. Touching `config.pbtxt` or the model's folder does not count; touching a version folder
    does. So in a local repository the version folders are touched, and Triton loads the model again
    while the old instances keep answering; in a bucket the model is unloaded first.
    """
    import time

    folder = Path(server.repository) / model
    if "://" not in server.repository and folder.is_dir():
        for version in folder.iterdir():
            if version.is_dir() and version.name.isdigit():
                # one second past the last change at least, should Triton compare whole seconds
                stamp = max(time.time(), version.stat().st_mtime + 1)
                os.utime(version, (stamp, stamp))
    else:
        _http(f"{server.url}/v2/repository/models/{model}/unload", "POST", b"{}", 300, key)
    return _http(f"{server.url}/v2/repository/models/{model}/load", "POST", b"{}", 300, key)


def supervise(
    server: TritonServer,
    on_restart: Callable[[str], None],
    on_ready: Callable[[int], None],
    key: str | None = None,
    interval: float = 0.5,
) -> None:
    """Keep Triton and its models up until interrupted.

    - Triton dies (a crash, an OOM kill): it is restarted on the same ports and loads the repository
      as it is; the dead server's log is kept as `triton.crash-<time>.log`. More than
      :data:`RESTARTS_PER_MINUTE` deaths in a minute raise :class:`TritonError`.
    - A model's Python-backend stub dies: Triton 2.51 keeps the model READY but fails every request
      sent to that instance ("Stub process is not healthy") and never starts a new stub. The model is
      reloaded (:func:`reload_model`), which starts new stubs; the failed requests are counted and
      reported.
    """
    import time

    restarts: list[float] = []
    stubs = backend_stubs(server.pid) if server.pid else {}
    while True:
        time.sleep(interval)
        if not server.is_alive():
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            reason = server.errors(last=5)
            if len(restarts) > RESTARTS_PER_MINUTE:
                raise TritonError(f"tritonserver exited {len(restarts)} times in a minute; giving up:\n{reason}")
            log = server.log_file
            kept = log.with_name(f"{log.stem}.crash-{time.strftime('%Y%m%d-%H%M%S')}{log.suffix}")
            log.replace(kept)
            on_restart(
                f"tritonserver exited unexpectedly (exit code {server.returncode}); restarting it. Its log: {kept}"
            )
            server.start()
            server.wait_ready(timeout=300)
            if server.pid is not None:
                on_ready(server.pid)
                stubs = backend_stubs(server.pid)
            continue
        if server.pid is None:
            continue
        current = backend_stubs(server.pid)
        dead = sorted({instance_model(i) for i in stubs if i not in current})
        for model in dead:
            before = failed_requests(server.url, model)
            on_restart(f"the Python-backend stub of {model} died; reloading {model}")
            try:
                status, body = reload_model(server, model, key)
            except NexusError as e:
                on_restart(f"could not reload {model}: {e}")
                continue
            if status != 200:
                on_restart(f"could not reload {model} ({status}): {body.decode(errors='replace')}")
                continue
            on_restart(f"reloaded {model}; Triton had counted {before} failed requests for it since it was loaded")
        stubs = backend_stubs(server.pid) if dead else {**stubs, **current}

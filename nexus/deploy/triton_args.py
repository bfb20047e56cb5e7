"""The `tritonserver` command line a replica runs, and kubelet's `$(VAR)` expansion of it.

One builder for every place a replica starts: the Kubernetes Deployment renders :func:`triton_args` as
its container's ``args``; a local fleet runs the same list through :func:`expand_env` (what kubelet does
with the container's environment) and :func:`localize` (a local repository, loopback and free ports),
then :class:`nexus.serving.server.TritonServer` with ``args=``. The flags themselves are the ones
`nexus serve` runs (:func:`nexus.serving.server.server_args`), plus what a fleet needs:

- ``--model-control-mode=explicit --load-model=*``: every model of the release loads at start-up, and
  nothing polls the repository (NVIDIA calls poll mode "not recommended for production");
- ``--strict-readiness=true``: `/v2/health/ready` answers 200 only when every model is ready, so a pod
  whose model fails to load never takes traffic;
- ``--exit-timeout-secs=N``: on SIGTERM Triton stops taking requests and waits up to N seconds for the
  ones in flight;
- the model-repository API (load, unload, index) restricted on HTTP and gRPC to callers sending the
  header `nexus-api-key`, whose value is ``$(NEXUS_API_KEY)``: kubelet substitutes the variable from the
  container's environment (filled from a Secret), so the key is never in the rendered objects;
- ``--backend-config=python,shm-default-byte-size=N`` when given: each Python-backend instance's first
  shared-memory region (`nexus.deploy.sizing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nexus.deploy.labels import GRPC_PORT, HTTP_PORT, METRICS_PORT
from nexus.serving.discovery import restricted_api_args
from nexus.serving.repository import triton_repository_path
from nexus.serving.server import server_args
from nexus.settings import StorageSettings

#: The container's environment variable that holds the model-repository API key (from a Secret).
API_KEY_ENV = "NEXUS_API_KEY"
#: Where a pod's Triton listens: every interface of the pod (Triton's own default, said explicitly).
POD_ADDRESS = "0.0.0.0"  # noqa: S104 - a pod's network namespace; the NetworkPolicy and Service bound it


def release_repository(uri: str, s3_endpoint: str | None = None) -> str:
    """How Triton names a release's prefix: ``s3://http://host:port/bucket/prefix/<id>`` with a custom
    S3 endpoint (MinIO, an in-cluster gateway), else the URI itself (`s3://...` on AWS, `gs://...`)."""
    return triton_repository_path(uri, StorageSettings(uri=uri, endpoint_url=s3_endpoint))


def triton_args(
    repository: str,
    *,
    exit_timeout: int = 30,
    shm_region_bytes: int | None = None,
    host: str = POD_ADDRESS,
    http_port: int = HTTP_PORT,
    grpc_port: int = GRPC_PORT,
    metrics_port: int = METRICS_PORT,
) -> list[str]:
    """The flags (no binary) of a replica serving ``repository`` (as Triton names it: :func:`release_repository`)."""
    args = server_args(
        repository=repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        model_control="explicit",
        load_models=("*",),
        exit_timeout=exit_timeout,
    )
    args += ["--strict-readiness=true", *restricted_api_args(f"$({API_KEY_ENV})")]
    if shm_region_bytes is not None:
        args.append(f"--backend-config=python,shm-default-byte-size={shm_region_bytes}")
    return args


def expand_env(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Each argument as kubelet passes it to the container: ``$(VAR)`` replaced by ``env[VAR]``.

    The rules of Kubernetes' `third_party/forked/golang/expansion` (what kubelet applies to a container's
    ``command`` and ``args``): ``$$`` is a literal ``$``; ``$(VAR)`` of an unknown variable stays as it
    is; a ``$`` not followed by ``(`` or ``$``, an unclosed ``$(``, and a ``$`` at the end stay too.
    """
    return [_expand(arg, env) for arg in args]


def _expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    checkpoint, cursor = 0, 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(" and (close := rest.find(")", 1)) != -1:
                name = rest[1:close]
                out.append(env.get(name, f"$({name})"))
                advance = close + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


#: The flags :func:`localize` swaps, and the keyword that gives each one's local value.
_LOCAL_FLAGS = {
    "--model-repository": "repository",
    "--http-address": "host",
    "--grpc-address": "host",
    "--metrics-address": "host",
    "--http-port": "http_port",
    "--grpc-port": "grpc_port",
    "--metrics-port": "metrics_port",
}


def localize(
    args: Sequence[str], *, repository: str, http_port: int, grpc_port: int, metrics_port: int, host: str = "127.0.0.1"
) -> list[str]:
    """The same flags for a process on this machine: only the repository, the addresses and the ports swapped.

    Raises:
        ValueError: one of those flags is missing from ``args`` (they did not come from :func:`triton_args`).
    """
    values = {
        "repository": repository,
        "host": host,
        "http_port": str(http_port),
        "grpc_port": str(grpc_port),
        "metrics_port": str(metrics_port),
    }
    out, seen = [], set()
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _LOCAL_FLAGS:
            arg = f"{flag}={values[_LOCAL_FLAGS[flag]]}"
            seen.add(flag)
        out.append(arg)
    if missing := sorted(set(_LOCAL_FLAGS) - seen):
        raise ValueError(f"not triton_args' flags: {', '.join(missing)} missing")
    return out

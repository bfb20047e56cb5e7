"""What a replica of a release needs: `/dev/shm`, memory, CPU and GPUs, from the release's models.

Every NexusML model runs in Triton's Python backend (`model_repository_templates/python_backend`): each
model instance is a stub process that exchanges its requests' and responses' tensors with the server
through a POSIX shared-memory region in `/dev/shm`. The backend's documentation ("Managing Shared
Memory", triton-inference-server/python_backend): each instance allocates ``shm-default-byte-size``
when it starts (at least 1 MiB) and grows its region by ``shm-growth-byte-size`` when a request needs
more; an instance whose region cannot be allocated fails to load with "Unable to initialize shared
memory key ... use '--shm-size'". A container's `/dev/shm` is the runtime's 64 MiB by default, and a
Kubernetes pod has no `--shm-size`: the fix everyone lands on (kserve#1937, server#4869, server#3036) is
a memory-backed ``emptyDir`` mounted at `/dev/shm`, whose ``sizeLimit`` bounds it (its pages count
against the container's memory, which is why :func:`memory_request` adds it).

The sizes, per model m of the release, with B = max(1, m.max_batch_size) and S = m.sample_bytes (one
sample's inputs and outputs together; :data:`FALLBACK_SAMPLE_BYTES` when a dimension is variable)::

    region   = max(1 MiB, B * S), rounded up to a MiB, the largest over the models
               (rendered as shm-default-byte-size: a full batch fits without growing on the hot path)
    /dev/shm = 64 MiB + sum over m of instances_on_pod(m) * 2 * region
               (64 MiB: what the container had before; 2x: room for each region to grow once)

and instances_on_pod(m) is m.instances per device: on each of the pod's GPUs for kind gpu (and auto
when the pod has GPUs, as Triton's KIND_AUTO places one group per GPU), once for kind cpu (and auto
without GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence

from nexus.release import ReleasedModel

MiB = 1 << 20
GiB = 1 << 30
#: `/dev/shm` of a container with no `--shm-size` (Docker's and containerd's default).
CONTAINER_SHM = 64 * MiB
#: The Python backend's smallest ``shm-default-byte-size``.
MIN_REGION = 1 * MiB
#: The bytes assumed for one sample when the release does not know them (a variable dimension): 1 MiB,
#: a 512x512 RGB float16 image; pass ``--shm-size`` when the model's samples are larger.
FALLBACK_SAMPLE_BYTES = 1 * MiB
#: Memory of the server process itself, and of one stub with torch imported: estimates (not measured
#: here), on the generous side; override with ``--memory``.
SERVER_MEMORY = 1 * GiB
INSTANCE_MEMORY = 512 * MiB


def _round_mib(n: int) -> int:
    return -(-n // MiB) * MiB


def default_gpus(models: Sequence[ReleasedModel]) -> int:
    """1 when any model may use a GPU (kind gpu, or auto: `nexus publish`'s default), else 0.

    A release of auto models on a cluster without GPU nodes stays Pending with "Insufficient
    nvidia.com/gpu", which names the fix (``--gpus 0``); the other default would quietly serve on CPU
    what was sized for a GPU.
    """
    return 1 if any(m.kind in ("gpu", "auto") for m in models) else 0


def instances_on_pod(model: ReleasedModel, gpus: int) -> int:
    """How many instances (stub processes) of ``model`` one pod with ``gpus`` GPUs runs."""
    on_gpus = model.kind == "gpu" or (model.kind == "auto" and gpus > 0)
    return model.instances * max(1, gpus) if on_gpus else model.instances


def shm_region_bytes(models: Sequence[ReleasedModel]) -> int:
    """``shm-default-byte-size``: the largest batch of any model, rounded up to a MiB (at least 1 MiB)."""
    needs = [max(1, m.max_batch_size) * (m.sample_bytes or FALLBACK_SAMPLE_BYTES) for m in models]
    return _round_mib(max([MIN_REGION, *needs]))


def shm_size_bytes(models: Sequence[ReleasedModel], gpus: int) -> int:
    """The `/dev/shm` emptyDir's ``sizeLimit``."""
    region = shm_region_bytes(models)
    return CONTAINER_SHM + sum(instances_on_pod(m, gpus) * 2 * region for m in models)


def memory_request(models: Sequence[ReleasedModel], gpus: int, shm_bytes: int) -> int:
    """Bytes of memory a pod requests (and is limited to): the server, each instance's stub with its
    artifact loaded (twice its size: the file's bytes and the loaded weights), and `/dev/shm`."""
    stubs = sum(instances_on_pod(m, gpus) * (INSTANCE_MEMORY + 2 * m.size) for m in models)
    return _round_mib(SERVER_MEMORY + stubs + shm_bytes)


def cpu_request_millis(models: Sequence[ReleasedModel], gpus: int) -> int:
    """Millicores a pod requests: one core for the server, one per instance that computes on the CPU, a
    quarter per instance that feeds a GPU. No CPU limit is rendered: throttling shows up as latency."""
    millis = 1000
    for m in models:
        on_gpus = m.kind == "gpu" or (m.kind == "auto" and gpus > 0)
        millis += instances_on_pod(m, gpus) * (250 if on_gpus else 1000)
    return millis


def quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity: `3Gi` when a whole number of GiB, else `3072Mi`, rounded up."""
    if n % GiB == 0:
        return f"{n // GiB}Gi"
    return f"{_round_mib(n) // MiB}Mi"

"""Keep a local Triton and its models up: restart a dead `tritonserver`, reload a model whose stub died.

- Triton dies (a crash, an OOM kill): it is restarted on the same ports and loads the repository as
  it is; the dead server's log is kept as `triton.crash-<time>.log`. More than
  :data:`RESTARTS_PER_MINUTE` deaths in a minute raise :class:`~nexus.errors.TritonError`.
- A model's Python-backend stub dies: Triton 2.51 keeps the model READY but fails every request sent
  to that instance ("Stub process is not healthy") and never starts a new stub. The model is reloaded
  (:func:`reload_model`), which starts new stubs; the failed requests are counted and reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nexus.errors import NexusError, TritonError
from nexus.serving.admin import TritonAdmin
from nexus.serving.repository import ModelRepository
from nexus.serving.server import TritonServer

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


def dead_stubs(config: dict[str, Any], model: str, triton_pid: int) -> list[str]:
    """Instances ``config`` (what Triton serves ``model`` with) asks for whose Python-backend stub does not run."""
    if config.get("backend") != "python":
        return []
    expected = [
        f"{model}_{g}_{i}" for g, group in enumerate(config.get("instance_group", [])) for i in range(group["count"])
    ]
    running = backend_stubs(triton_pid)
    return [name for name in expected if name not in running]


def reload_model(admin: TritonAdmin, repository: ModelRepository, model: str) -> None:
    """Load ``model`` anew, so that Triton starts new Python-backend stubs for it.

    Triton 2.51 skips a load request for a model it finds unchanged since it loaded it, so after a
    stub died a plain load is a no-op and the stub stays dead. The chaos suite found it: the first
    reload after a start works only because the first load writes `__pycache__` into the version
    folder. Touching `config.pbtxt` or the model's folder does not count; touching a version folder
    does. So in a local repository the version folders are touched, and Triton loads the model again
    while the old instances keep answering; in a bucket, or a release (never touched), the model is
    unloaded first.
    """
    folder = repository.folder
    if folder is not None and (folder / model).is_dir() and repository.release is None:
        for version in (folder / model).iterdir():
            if version.is_dir() and version.name.isdigit():
                # one second past the last change at least, should Triton compare whole seconds
                stamp = max(time.time(), version.stat().st_mtime + 1)
                os.utime(version, (stamp, stamp))
    else:
        admin.unload(model)
    admin.load(model)


def supervise(
    server: TritonServer,
    repository: ModelRepository,
    on_message: Callable[[str], None],
    on_restarted: Callable[[int], None],
    key: str | None = None,
    interval: float = 0.5,
) -> None:
    """Keep Triton and its models up until interrupted (see the module's docstring)."""
    admin = TritonAdmin(server.url, key=key)
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
            on_message(
                f"tritonserver exited unexpectedly (exit code {server.returncode}); restarting it. Its log: {kept}"
            )
            server.start()
            server.wait_ready(timeout=300)
            if server.pid is not None:
                on_restarted(server.pid)
                stubs = backend_stubs(server.pid)
            continue
        if server.pid is None:
            continue
        current = backend_stubs(server.pid)
        dead = sorted({instance_model(i) for i in stubs if i not in current})
        for model in dead:
            on_message(f"the Python-backend stub of {model} died; reloading {model}")
            try:
                before = admin.stats(model).failure
            except NexusError:
                before = 0
            try:
                reload_model(admin, repository, model)
            except NexusError as e:
                on_message(f"could not reload {model}: {e}")
                continue
            on_message(f"reloaded {model}; Triton had counted {before} failed requests for it since it was loaded")
        stubs = backend_stubs(server.pid) if dead else {**stubs, **current}

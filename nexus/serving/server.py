"""Run a real Triton Inference Server without Docker: the `tritonserver` shipped in `nvidia-pytriton`.

The wheel carries the server (`pytriton/tritonserver/bin/tritonserver`), its shared libraries
(`nvidia_pytriton.libs/`), the Python backend (`backends/python/`) and one backend stub per Python
version (`python_backend_stubs/3.X/`). The server needs a backend folder holding `python/` with the
backend files plus the stub for the running Python; the stub finds this environment's packages
through the `python3` first on `PATH`, so this environment's `bin/` goes first.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nexus.errors import TritonError
from nexus.serving.admin import TritonAdmin

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    lib_dir: Path | None
    backend_files: Path
    stub: Path


def find_triton(binary: Path | None = None) -> TritonInstall:
    """Locate `tritonserver` and the Python backend in the installed `nvidia-pytriton` wheel."""
    try:
        import pytriton
    except ImportError as e:
        raise TritonError(
            "nvidia-pytriton is not installed, so there is no tritonserver to run; "
            "`pip install 'nexusml[serve]'` or pass --tritonserver PATH"
        ) from e
    base = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = base / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.8-3.13")
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(
        binary=binary or base / "bin" / "tritonserver",
        lib_dir=libs if libs.is_dir() else None,
        backend_files=base / "backends" / "python",
        stub=stub,
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports for a server's endpoints (held open together, so the
    kernel cannot hand one out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


#: Log lines tritonserver writes on a machine without a GPU; they never explain a failure.
_HARMLESS = ("CudaDriverHelper", "NVML", "DCGM", "cudaGetDeviceCount", "pinned memory", "CUDA memory pool")
_FAILED_LOAD = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")


def server_args(
    *,
    repository: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    model_control: str = "explicit",
    load_models: Sequence[str] = ("*",),
    exit_timeout: int = 10,
) -> list[str]:
    """The tritonserver flags every NexusML server runs with (no binary, no backend folder).

    `nexus serve` runs them through :class:`TritonServer`; a Kubernetes Deployment renders them with its
    own values and a few more (`nexus.deploy.triton_args`).
    """
    args = [
        f"--model-repository={repository}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        f"--model-control-mode={model_control}",
        f"--exit-timeout-secs={exit_timeout}",
        "--log-verbose=0",
        # p50/p99 for the dashboards: nv_inference_{request,queue,compute_*}_summary_us with quantiles
        "--metrics-config=summary_latencies=true",
    ]
    if model_control == "explicit":
        args += [f"--load-model={m}" for m in load_models]
    return args


class TritonServer:
    """One `tritonserver` process: ``start``, ``wait_ready``, ``stop``, ``is_alive``, ``logs``."""

    def __init__(
        self,
        *,
        repository: str,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        host: str = "127.0.0.1",
        model_control: str = "explicit",
        load_models: Sequence[str] = ("*",),
        log_file: Path | None = None,
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        args: Sequence[str] | None = None,
    ) -> None:
        """``args``, when given, are the server's flags as they are (a rendered Deployment's, say): they
        replace every flag the other arguments make, so ``host`` and the ports must be the ones in them."""
        self.install = find_triton(binary)
        # local paths are made absolute: the server runs in its own working folder
        self.repository = repository if "://" in repository else str(Path(repository).resolve())
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.model_control = model_control
        self.load_models = list(load_models)
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.args = list(args) if args is not None else None
        self._workdir = Path(tempfile.mkdtemp(prefix="nexus-triton-"))
        self.log_file = log_file or self._workdir / "triton.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _backend_dir(self) -> Path:
        backends = self._workdir / "backends"
        python = backends / "python"
        python.mkdir(parents=True, exist_ok=True)
        files = [item for item in self.install.backend_files.iterdir() if item.is_file()]
        for item in [*files, self.install.stub]:
            target = python / item.name
            # on a restart the copies are there, and a stub of the dead server may still be running one
            if not target.exists():
                shutil.copy2(item, target)
        return backends

    def command(self) -> list[str]:
        backends = f"--backend-directory={self._backend_dir()}"
        if self.args is not None:
            return [str(self.install.binary), backends, *self.args]
        flags = server_args(
            repository=self.repository,
            host=self.host,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            model_control=self.model_control,
            load_models=self.load_models,
        )
        return [str(self.install.binary), backends, *flags, *self.extra_args]

    def start(self) -> None:
        if not self.install.binary.exists():
            raise TritonError(f"tritonserver not found at {self.install.binary}; pass --tritonserver PATH")
        env = {**os.environ, **self.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if self.install.lib_dir is not None:
            env["LD_LIBRARY_PATH"] = f"{self.install.lib_dir}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
        log = open(self.log_file, "wb")  # noqa: SIM115 - owned by the child process
        with log:
            # A neutral working folder: the backend stub puts its cwd on sys.path, and a folder there
            # named like a package (a project's own `triton/`, say) would shadow the real one for torch.
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workdir,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def logs(self, last: int | None = None) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        lines = text.splitlines()
        return "\n".join(lines[-last:] if last else lines)

    def errors(self, last: int = 10) -> str:
        """What went wrong, from the server's log: one line per error, the harmless CPU-only ones left out.

        A model that failed to load reads ``m v1 failed to load: <Triton's reason>``; without error
        lines, the log's last lines are returned.
        """
        lines = self.logs().splitlines()
        found: list[str] = []
        for line in lines:
            if not (line.startswith("E") or "failed to load" in line) or any(n in line for n in _HARMLESS):
                continue
            message = line.split("] ", 1)[-1].strip().strip('"').split("\\n")[0]
            if failed := _FAILED_LOAD.match(message):
                message = f"{failed['model']} v{failed['version']} failed to load: {failed['reason']}"
            elif message.startswith("failed to load '") or "failed to load all models" in message:
                continue  # the per-version line says it better
            if message not in found:
                found.append(message)
        text = "\n".join((found or lines)[-last:])
        return f"{text}\n(Triton's log: {self.log_file})"

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until `/v2/health/ready` answers 200; raise with the server's last log lines if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise TritonError(f"tritonserver exited during start-up:\n{self.errors()}")
            if TritonAdmin(self.url).is_ready():
                return
            time.sleep(0.25)
        raise TritonError(f"tritonserver was not ready after {timeout:.0f}s:\n{self.errors()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT, then SIGKILL after ``timeout`` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

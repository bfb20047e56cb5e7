"""Test helpers: one-line git repositories and small real models of each format."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nexus.serving.model_config import ServingOptions
    from nexus.serving.server import TritonServer


@dataclass
class GitRepo:
    root: Path

    @classmethod
    def create(cls, root: Path) -> GitRepo:
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        return cls(root)

    def git(self, *args: str) -> str:
        result = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def gen(self, files: dict[str, str | bytes], commit: str | None = None) -> None:
        """Write ``files`` (relative path -> content); with ``commit``, add and commit them."""
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        if commit:
            self.git("add", *files)
            self.git("commit", "-q", "-m", commit)

    @property
    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def status(self) -> str:
        return self.git("status", "--porcelain")


def nexus_cli(
    *args: str, cwd: Path, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `nexus` console script in a subprocess (the `run_nexus` fixture; also for wider-scoped ones)."""
    exe = Path(sys.executable).with_name("nexus")
    result = subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=240
    )
    if check and result.returncode != 0:
        raise AssertionError(f"nexus {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before (the kernel may offer the
    same ephemeral port to consecutive calls, and a server given two equal ports fails to start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _mlp(seed: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def make_torchscript(path: Path, seed: int = 0) -> Path:
    import torch

    torch.jit.script(_mlp(seed)).save(str(path))
    return path


def make_torch_export(path: Path, seed: int = 0) -> Path:
    import torch
    from torch.export import Dim

    program = torch.export.export(_mlp(seed), (torch.randn(2, 4),), dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def make_onnx(path: Path, seed: int = 0) -> Path:
    """A real ONNX model (y = relu(x @ W + b)), weights drawn from ``seed``, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), name="W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), name="B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b],
    )
    # IR version 9 (ONNX 1.15) loads in every onnxruntime of the last years, as exporters target it
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def serve_one_model(root: Path, options: ServingOptions | None = None) -> tuple[TritonServer, Path]:
    """A git project under ``root`` with a torch.export model "m" stored and published to
    ``root/repository``, and a TritonServer (not started) over it, on free ports: (server, artifact)."""
    from nexus.registry import Project
    from nexus.serving.publish import publish
    from nexus.serving.server import TritonServer

    repo = GitRepo.create(root / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    project = Project.open(repo.root, env={})
    artifact = make_torch_export(root / "m.pt2")
    project.store(artifact, "m")
    publish(project, "m", repository=root / "repository", options=options)
    server = TritonServer(
        repository=str(root / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    return server, artifact

"""The benchmark's reference models (an MLP and a small CNN) and their in-process forward speed, the limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from _bench_cpu import wait_until_quiet
from nexus.tensors import Signature, TensorSpec


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 10),
    )


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 7 * 7, 10),
    )


@dataclass(frozen=True)
class Reference:
    name: str
    build: Callable[[], torch.nn.Module]
    sample_shape: tuple[int, ...]
    outputs: int = 10

    @property
    def signature(self) -> Signature:
        return Signature(
            [TensorSpec("x", "float32", [-1, *self.sample_shape])], [TensorSpec("y", "float32", [-1, self.outputs])]
        )


MODELS = {"mlp": Reference("mlp", mlp, (784,)), "cnn": Reference("cnn", cnn, (1, 28, 28))}


def export(reference: Reference, path: Path) -> Path:
    module = reference.build().eval()
    torch.jit.script(module).save(str(path))  # type: ignore[no-untyped-call]  # untyped in torch
    return path


def in_process(
    path: Path, shape: tuple[int, ...], batch: int, seconds: float, quiet: bool = True, device: str = "cpu"
) -> float:
    """Samples/s of the artifact's forward pass at ``batch`` on ``device``, one torch thread, inference mode.

    The best of three runs, each started once the machine is quiet (with ``quiet``): the limit the
    served figures are compared with, so it is measured at its best. On a GPU each run ends with a
    synchronize, so that queued kernels are counted.
    """
    torch.set_num_threads(1)
    module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]  # untyped in torch
    x = torch.randn(batch, *shape, device=device)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    best = 0.0
    with torch.inference_mode():
        for _ in range(3):
            if quiet:
                wait_until_quiet()
            for _ in range(20):
                module(x)
            sync()
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 3:
                module(x)
                n += 1
            sync()
            elapsed = time.perf_counter() - start
            best = max(best, n * batch / elapsed)
    return best

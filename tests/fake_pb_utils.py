"""An in-process stand-in for Triton's `triton_python_backend_utils`, for unit tests of `model.py`.

It implements only what `model.py` calls, with the same names and signatures; the real module is
exercised by the tests that run a real Triton server.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils import dlpack


class Tensor:
    def __init__(self, name: str, value: np.ndarray | torch.Tensor) -> None:
        self._name = name
        self._value = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return not self._value.is_cuda

    def as_numpy(self) -> np.ndarray:
        if self._value.dtype == torch.bfloat16:
            raise TypeError("numpy has no bfloat16")  # as in Triton: BF16 only crosses through DLPack
        return self._value.numpy()

    def to_dlpack(self) -> Any:
        return dlpack.to_dlpack(self._value)  # type: ignore[attr-defined]

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        return Tensor(name, dlpack.from_dlpack(capsule))

    def as_torch(self) -> torch.Tensor:
        """Test helper: the value as a torch tensor."""
        return self._value


class TritonError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self.output_tensors = output_tensors
        self.error = error

    def has_error(self) -> bool:
        return self.error is not None

    def output(self, name: str) -> torch.Tensor:
        return next(t.as_torch() for t in self.output_tensors if t.name() == name)


class InferenceRequest:
    """Test helper: a request is a dict of input tensors."""

    def __init__(self, **inputs: np.ndarray | torch.Tensor) -> None:
        self.inputs = {name: Tensor(name, value) for name, value in inputs.items()}


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request.inputs.get(name)


class Logger:
    messages: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.messages.append(("info", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.messages.append(("error", message))

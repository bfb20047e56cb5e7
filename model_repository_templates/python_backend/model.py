"""NexusML's Triton Python-backend model: one forward pass per batch of requests.

`nexus publish` copies this file, unchanged, next to the model artifact in
`<repository>/<model>/<version>/`. `config.pbtxt` tells it what to load through its `parameters`
(`nexus_artifact`, `nexus_format`, ...). It depends only on torch (and onnxruntime for ONNX
models), never on the `nexus` package, so it runs in any Triton image that has torch.

`execute` validates each request on its own (a request with a bad dtype or shape gets its own error
response), concatenates the valid requests' inputs into one tensor per input, runs **one** forward
pass under `torch.inference_mode()`, and splits the outputs back per request. Tensors on the GPU
move between Triton and torch through DLPack without copies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils import dlpack

# Triton data types (config names without "TYPE_") -> torch dtypes.
TORCH_DTYPES = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}


class RequestError(ValueError):
    """A request that cannot be served; it is answered with an error, the rest of the batch is not."""


class TensorSpec:
    """An input or output from `config.pbtxt`: name, torch dtype, dims without the batch dimension."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.name: str = raw["name"]
        self.triton_type: str = raw["data_type"].removeprefix("TYPE_")
        self.dtype: torch.dtype = TORCH_DTYPES[self.triton_type]
        self.dims: list[int] = [int(d) for d in raw["dims"]]

    def check(self, tensor: torch.Tensor, batched: bool) -> None:
        if tensor.dtype != self.dtype:
            got = str(tensor.dtype).removeprefix("torch.")
            raise RequestError(f"input '{self.name}' has dtype {got}, expected {self.triton_type}")
        shape = list(tensor.shape[1:] if batched else tensor.shape)
        if len(shape) != len(self.dims) or any(d not in (-1, s) for d, s in zip(self.dims, shape, strict=True)):
            raise RequestError(f"input '{self.name}' has shape {list(tensor.shape)}, expected [batch, {self.dims}]")


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def _to_torch(tensor: Any, spec: TensorSpec) -> torch.Tensor:
    """Triton tensor -> torch tensor through DLPack, without a copy, on the CPU and the GPU."""
    return dlpack.from_dlpack(tensor.to_dlpack())


def _to_triton(name: str, value: torch.Tensor) -> Any:
    value = value.detach()
    if value.is_cuda or value.dtype == torch.bfloat16:
        return pb_utils.Tensor.from_dlpack(name, dlpack.to_dlpack(value.contiguous()))  # type: ignore[attr-defined]
    return pb_utils.Tensor(name, value.contiguous().numpy())


def _as_outputs(result: Any, names: Sequence[str]) -> list[torch.Tensor]:
    """The model's return value (a tensor, a tuple/list, or a dict) as one tensor per output name."""
    if isinstance(result, dict):
        missing = [n for n in names if n not in result]
        if missing:
            raise RuntimeError(f"the model returned keys {sorted(result)}, config.pbtxt expects {list(names)}")
        values = [result[n] for n in names]
    elif isinstance(result, list | tuple):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(names):
        raise RuntimeError(f"the model returned {len(values)} outputs, config.pbtxt declares {len(names)}")
    return [torch.as_tensor(v) for v in values]


class TorchRunner:
    """TorchScript or torch.export artifacts on one device."""

    def __init__(self, path: Path, fmt: str, device: torch.device) -> None:
        self.device = device
        if fmt == "torchscript":
            self.module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        elif fmt == "torch_export":
            self.module = torch.export.load(str(path)).module().to(device)
        else:
            raise ValueError(f"TorchRunner cannot load format {fmt!r}")
        if hasattr(self.module, "eval") and fmt == "torchscript":
            self.module.eval()

    def __call__(self, inputs: list[torch.Tensor], names: Sequence[str]) -> list[torch.Tensor]:
        with torch.inference_mode():
            moved = [t.to(self.device, non_blocking=True) for t in inputs]
            return _as_outputs(self.module(*moved), names)


class OnnxRunner:
    """ONNX artifacts through onnxruntime (CUDA provider on the GPU where it is installed)."""

    def __init__(self, path: Path, input_names: Sequence[str], gpu: bool) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input_names = list(input_names)

    def __call__(self, inputs: list[torch.Tensor], names: Sequence[str]) -> list[torch.Tensor]:
        feed = {n: t.cpu().numpy() for n, t in zip(self.input_names, inputs, strict=True)}
        return [torch.from_numpy(np.asarray(v)) for v in self.session.run(list(names), feed)]


class TritonPythonModel:
    """The model Triton's Python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        self.name = config["name"]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [TensorSpec(t) for t in config["input"]]
        self.outputs = [TensorSpec(t) for t in config["output"]]
        self.output_names = [t.name for t in self.outputs]
        torch.set_num_threads(int(params.get("nexus_torch_threads", "1") or 1))

        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu")
        folder = Path(args["model_repository"]) / args["model_version"]
        artifact = folder / params["nexus_artifact"]
        fmt = params["nexus_format"]
        if fmt == "onnx":
            self.run: TorchRunner | OnnxRunner = OnnxRunner(artifact, [t.name for t in self.inputs], gpu)
        else:
            self.run = TorchRunner(artifact, fmt, self.device)
        pb_utils.Logger.log_info(
            f"nexus: {self.name} v{args['model_version']} ({fmt}, commit {params.get('nexus_commit', '?')[:8]}) "
            f"on {self.device}"
        )

    def _inputs(self, request: Any) -> list[torch.Tensor]:
        tensors = []
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise RequestError(f"input '{spec.name}' is missing")
            value = _to_torch(tensor, spec)
            spec.check(value, self.batched)
            tensors.append(value)
        sizes = {t.shape[0] for t in tensors} if self.batched else {1}
        if len(sizes) != 1:
            raise RequestError(f"inputs have different batch sizes {sorted(sizes)}")
        return tensors

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        valid: list[tuple[int, list[torch.Tensor]]] = []
        for i, request in enumerate(requests):
            try:
                valid.append((i, self._inputs(request)))
            except RequestError as e:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))
        # one forward pass for the whole batch; without a batch dimension nothing can be concatenated
        groups = ([valid] if valid else []) if self.batched else [[item] for item in valid]
        for group in groups:
            self._run_group(group, responses)
        return responses

    def _run_group(self, group: list[tuple[int, list[torch.Tensor]]], responses: list[Any]) -> None:
        try:
            if len(group) == 1:
                batch = group[0][1]
            else:
                batch = [torch.cat([inputs[k] for _, inputs in group]) for k in range(len(self.inputs))]
            outputs = self.run(batch, self.output_names)
            sizes = [inputs[0].shape[0] for _, inputs in group] if self.batched else [1]
            total = sum(sizes)
            if self.batched and any(o.shape[:1] != (total,) for o in outputs):
                shapes = [list(o.shape) for o in outputs]
                raise RuntimeError(f"outputs {shapes} do not have the batch size {total} of the inputs")
            parts = [torch.split(o, sizes) for o in outputs] if self.batched else [[o] for o in outputs]
            for j, (i, _) in enumerate(group):
                tensors = [_to_triton(spec.name, part[j]) for spec, part in zip(self.outputs, parts, strict=True)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        except Exception as e:  # noqa: BLE001 - every failure becomes an error response, never a dead stub
            if len(group) > 1:
                # One request's values (say, a token id out of range) can fail the whole batch: retry
                # each request alone so only the bad one gets the error.
                for item in group:
                    self._run_group([item], responses)
                return
            # TorchScript errors carry a whole traceback: the response gets its last line, the log all of it
            lines = [line for line in str(e).splitlines() if line.strip()]
            detail = lines[-1] if lines else type(e).__name__
            message = (
                f"{self.name}: the model failed on a batch of {len(group)} request(s): {type(e).__name__}: {detail}"
            )
            pb_utils.Logger.log_error(f"{message}\n{e}")
            for i, _ in group:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self) -> None:
        pb_utils.Logger.log_info(f"nexus: {self.name} unloaded")

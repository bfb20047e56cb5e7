"""NexusML's Triton Python-backend model: one forward pass per batch of requests.

`nexus publish` copies this file, unchanged, next to the model artifact in
`<repository>/<model>/<version>/`. `config.pbtxt` tells it what to load through its `parameters`
(`nexus_artifact`, `nexus_format`, ...). It depends only on torch (and onnxruntime for ONNX
models), never on the `nexus` package, so it runs in any Triton image that has torch.

`execute` validates each request on its own (a request with a bad dtype or shape gets its own error
response), concatenates the valid requests' inputs into one tensor per input, runs **one** forward
pass under `torch.inference_mode()`, and splits the outputs back per request. Tensors on the GPU
move between Triton and torch through DLPack without copies.

The work around the forward pass is paid per request, in one Python thread that also runs the
model, so it is kept small (docs/batching.md has the figures): CPU inputs are read as numpy views
of Triton's buffers and concatenated once; each output is converted to numpy once per batch and
every request gets a slice of it, a view, which Triton copies into its response.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
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


#: An input as it arrives: a numpy view of Triton's CPU buffer, or (GPU, BF16) a torch tensor through DLPack.
Value = npt.NDArray[Any] | torch.Tensor


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any] | None:
    """numpy's dtype for a torch dtype; None for bfloat16, which numpy lacks."""
    return None if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype


class TensorSpec:
    """An input or output from `config.pbtxt`: name, torch dtype, dims without the batch dimension."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.name: str = raw["name"]
        self.triton_type: str = raw["data_type"].removeprefix("TYPE_")
        self.dtype: torch.dtype = TORCH_DTYPES[self.triton_type]
        self.numpy_dtype = _numpy_dtype(self.dtype)
        self.dims: list[int] = [int(d) for d in raw["dims"]]
        self._shape = tuple(self.dims)

    def check(self, value: Value, batched: bool) -> None:
        expected = self.numpy_dtype if isinstance(value, np.ndarray) else self.dtype
        if value.dtype != expected:
            got = str(value.dtype).removeprefix("torch.")
            raise RequestError(f"input '{self.name}' has dtype {got}, expected {self.triton_type}")
        shape = tuple(value.shape[1:] if batched else value.shape)
        if shape != self._shape and (
            len(shape) != len(self.dims) or any(d not in (-1, s) for d, s in zip(self.dims, shape, strict=True))
        ):
            raise RequestError(f"input '{self.name}' has shape {list(value.shape)}, expected [batch, {self.dims}]")


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def _read(tensor: Any, spec: TensorSpec) -> Value:
    """A Triton input without a copy: numpy's view of a CPU buffer, else a torch tensor through DLPack."""
    if spec.numpy_dtype is not None and tensor.is_cpu():
        with contextlib.suppress(TypeError):  # numpy cannot hold what was sent (BF16 for another type): check names it
            array: npt.NDArray[Any] = tensor.as_numpy()
            return array
    return dlpack.from_dlpack(tensor.to_dlpack())


def _as_torch(value: Value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    # torch warns about (and may write into) a read-only array; Triton's buffers are writable, never copied here
    return torch.from_numpy(value if value.flags.writeable else value.copy())


def _concat(values: list[Value]) -> torch.Tensor:
    """One tensor from the requests' values: one copy for CPU arrays, on the GPU if any value is there."""
    if len(values) == 1:
        return _as_torch(values[0])
    if all(isinstance(v, np.ndarray) for v in values):
        return torch.from_numpy(np.concatenate(values))
    tensors = [_as_torch(v) for v in values]
    device = next((t.device for t in tensors if t.is_cuda), tensors[0].device)
    return torch.cat([t.to(device) for t in tensors])


def _to_triton(name: str, value: torch.Tensor, sizes: list[int] | None) -> list[Any]:
    """``value`` as Triton tensors: split into ``sizes`` rows per request, or whole with ``sizes`` None."""
    value = value.detach()
    if value.is_cuda or value.dtype == torch.bfloat16:
        parts = [value] if sizes is None else torch.split(value, sizes)
        return [pb_utils.Tensor.from_dlpack(name, dlpack.to_dlpack(p.contiguous())) for p in parts]  # type: ignore[attr-defined]
    array = value.contiguous().numpy()
    if sizes is None:
        return [pb_utils.Tensor(name, array)]
    # row slices of a C-contiguous array are C-contiguous views: no copy here, Triton copies each once
    tensors, start = [], 0
    for size in sizes:
        tensors.append(pb_utils.Tensor(name, array[start : start + size]))
        start += size
    return tensors


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

    def _inputs(self, request: Any) -> list[Value]:
        values = []
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise RequestError(f"input '{spec.name}' is missing")
            value = _read(tensor, spec)
            spec.check(value, self.batched)
            values.append(value)
        if self.batched and len(values) > 1 and len({v.shape[0] for v in values}) != 1:
            raise RequestError(f"inputs have different batch sizes {sorted({v.shape[0] for v in values})}")
        return values

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        valid: list[tuple[int, list[Value]]] = []
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

    def _run_group(self, group: list[tuple[int, list[Value]]], responses: list[Any]) -> None:
        try:
            batch = [_concat([inputs[k] for _, inputs in group]) for k in range(len(self.inputs))]
            outputs = self.run(batch, self.output_names)
            sizes = [int(inputs[0].shape[0]) for _, inputs in group] if self.batched else None
            if sizes is not None and any(o.shape[:1] != (sum(sizes),) for o in outputs):
                shapes = [list(o.shape) for o in outputs]
                raise RuntimeError(f"outputs {shapes} do not have the batch size {sum(sizes)} of the inputs")
            per_output = [_to_triton(spec.name, o, sizes) for spec, o in zip(self.outputs, outputs, strict=True)]
            for (i, _), tensors in zip(group, zip(*per_output, strict=True), strict=True):
                responses[i] = pb_utils.InferenceResponse(output_tensors=list(tensors))
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

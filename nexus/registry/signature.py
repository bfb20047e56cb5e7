"""Check a model against an input/output signature by running it once, in-process, on the CPU.

Used before anything is written: by `nexus store --input/--output` (TorchScript carries no
signature of its own) and by `nexus publish`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nexus.errors import ModelLoadError, SignatureError
from nexus.registry.formats import ONNX
from nexus.tensors import Signature, TensorSpec, normalize_dtype


def _sample(spec: TensorSpec, batch: int, batched: bool) -> Any:
    import torch

    dims = [d if d > 0 else 2 for d in (spec.shape[1:] if batched else spec.shape)]
    shape = [batch, *dims] if batched else dims
    servable = spec.servable_dtype()
    dtype = getattr(torch, servable.torch)
    if servable.is_float:
        return torch.randn(shape).to(dtype)
    return torch.zeros(shape, dtype=dtype)  # zeros are valid token ids and masks


def _load_runner(artifact: Path, fmt: str, output_names: list[str]) -> Any:
    """A callable ``(inputs, signature) -> list of output tensors`` for the artifact, on the CPU."""
    import torch

    try:
        if fmt == ONNX:
            import onnxruntime as ort

            session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        elif fmt == "torchscript":
            module = torch.jit.load(str(artifact), map_location="cpu")  # type: ignore[no-untyped-call]
        else:
            with open(artifact, "rb") as f:  # a file object: the cache's names have no .pt2 suffix
                module = torch.export.load(f).module()
    except Exception as e:  # the runtimes raise many types; all mean the same here
        detail = (str(e).splitlines() or [""])[0]
        raise ModelLoadError(
            f"the {fmt} artifact cannot be loaded ({type(e).__name__}: {detail}); store a good export of the model"
        ) from e

    def run(samples: list[Any], signature: Signature) -> list[Any]:
        if fmt == ONNX:
            feed = {s.name: t.numpy() for s, t in zip(signature.inputs, samples, strict=True)}
            return [torch.from_numpy(r) for r in session.run(output_names, feed)]
        with torch.inference_mode():
            return [torch.as_tensor(v) for v in _flatten(module(*samples))]

    return run


def check_signature(artifact: Path, fmt: str, signature: Signature, batched: bool) -> None:
    """Run one forward pass on sample inputs and compare the outputs with ``signature``.

    Raises:
        ModelLoadError: the artifact cannot be loaded at all.
        SignatureError: the model fails on such inputs, or returns other dtypes or shapes.
    """
    batch = 3
    for spec in signature.outputs:
        spec.servable_dtype()  # an unservable output is refused before the model is loaded (inputs: _sample)
    samples = [_sample(s, batch, batched) for s in signature.inputs]
    run = _load_runner(artifact, fmt, [s.name for s in signature.outputs])
    try:
        results = run(samples, signature)
    except Exception as e:  # any failure of the model on valid inputs is a signature mismatch
        shapes = ", ".join(f"{s.name}{list(t.shape)}:{s.dtype}" for s, t in zip(signature.inputs, samples, strict=True))
        detail = (str(e).splitlines() or [""])[0]
        raise SignatureError(f"the model fails on inputs {shapes}: {type(e).__name__}: {detail}") from e
    if len(results) != len(signature.outputs):
        declared = len(signature.outputs)
        raise SignatureError(f"the model returns {len(results)} outputs, the signature declares {declared}")
    for spec, result in zip(signature.outputs, results, strict=True):
        got_dtype = normalize_dtype(str(result.dtype).removeprefix("torch."))
        expected = [batch, *spec.shape[1:]] if batched else list(spec.shape)
        shape_ok = len(result.shape) == len(expected) and all(
            e in (-1, g) for e, g in zip(expected, result.shape, strict=True)
        )
        if got_dtype != spec.dtype or not shape_ok:
            raise SignatureError(
                f"output '{spec.name}' is {got_dtype}{list(result.shape)} for a batch of {batch}, "
                f"the signature says {spec.dtype}{expected}; fix --output"
            )


def _flatten(raw: Any) -> list[Any]:
    if isinstance(raw, dict):
        return list(raw.values())
    if isinstance(raw, list | tuple):
        return list(raw)
    return [raw]

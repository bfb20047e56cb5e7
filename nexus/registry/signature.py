"""Check a model against an input/output signature by running it once, in-process, on the CPU.

Used before anything is written: by `nexus store --input/--output` (TorchScript carries no
signature of its own), by `nexus signature` and by `nexus publish`. :func:`signature_command` is
the command to give a version its signature, filled in with the model's own input and output names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nexus.errors import ModelLoadError, NexusError, SignatureError
from nexus.registry.formats import ONNX, TORCHSCRIPT, model_io
from nexus.tensors import Signature, TensorSpec, normalize_dtype

#: What a loaded model is called with: one tensor per input, in order; it returns what the model returns
#: (a tensor, a tuple/list, or a dict; ONNX: a list in the order of the names asked for).
Runner = Callable[[list[Any]], Any]


def _sample(spec: TensorSpec, batch: int, batched: bool) -> Any:
    import torch

    dims = [d if d > 0 else 2 for d in (spec.shape[1:] if batched else spec.shape)]
    shape = [batch, *dims] if batched else dims
    servable = spec.servable_dtype()
    dtype = getattr(torch, servable.torch)
    if servable.is_float:
        return torch.randn(shape).to(dtype)
    return torch.zeros(shape, dtype=dtype)  # zeros are valid token ids and masks


def load_runner(artifact: Path, fmt: str, input_names: Sequence[str], output_names: Sequence[str] | None) -> Runner:
    """The artifact loaded on the CPU, as a :data:`Runner` (ONNX: ``output_names``, or all outputs for None).

    Raises:
        ModelLoadError: the artifact cannot be loaded.
    """
    import torch

    try:
        if fmt == ONNX:
            import onnxruntime as ort

            session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        elif fmt == TORCHSCRIPT:
            module = torch.jit.load(str(artifact), map_location="cpu")  # type: ignore[no-untyped-call]
        else:
            with open(artifact, "rb") as f:  # a file object: the cache's names have no .pt2 suffix
                module = torch.export.load(f).module()
    except Exception as e:  # the runtimes raise many types; all mean the same here
        detail = (str(e).splitlines() or [""])[0]
        raise ModelLoadError(
            f"the {fmt} artifact cannot be loaded ({type(e).__name__}: {detail}); store a good export of the model"
        ) from e

    def run(samples: list[Any]) -> Any:
        if fmt == ONNX:
            feed = {name: t.numpy() for name, t in zip(input_names, samples, strict=True)}
            return [torch.from_numpy(r) for r in session.run(list(output_names) if output_names else None, feed)]
        with torch.inference_mode():
            return module(*samples)

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
    names = [s.name for s in signature.outputs]
    run = load_runner(artifact, fmt, [s.name for s in signature.inputs], names)
    try:
        raw = run(samples)
    except Exception as e:  # any failure of the model on valid inputs is a signature mismatch
        shapes = ", ".join(f"{s.name}{list(t.shape)}:{s.dtype}" for s, t in zip(signature.inputs, samples, strict=True))
        raise SignatureError(f"the model fails on inputs {shapes}: {error_detail(e)}") from e
    results = outputs_by_name(raw, names)
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


def error_detail(error: BaseException) -> str:
    """`Type: message` for a model's error, from the line that says what went wrong (TorchScript puts it
    last, after its own traceback, already prefixed with the type)."""
    kind = type(error).__name__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return kind
    torchscript = lines[0].startswith("The following operation failed in the TorchScript interpreter")
    line = lines[-1] if torchscript else lines[0]
    return line if line.startswith(f"{kind}: ") else f"{kind}: {line}"


def outputs_by_name(raw: Any, names: Sequence[str]) -> list[Any]:
    """What the model returned, one tensor per output, as the Python backend's `model.py` reads it:
    a dict by its keys, a tuple or list by position, a tensor as the one output."""
    import torch

    if isinstance(raw, dict):
        missing = [n for n in names if n not in raw]
        if missing:
            raise SignatureError(
                f"the model returns a dict with keys {sorted(raw)}, the signature declares outputs {list(names)}; "
                "name the outputs after the keys"
            )
        values = [raw[n] for n in names]
    elif isinstance(raw, list | tuple):
        values = list(raw)
    else:
        values = [raw]
    return [torch.as_tensor(v) for v in values]


def signature_command(model_name: str, version: int, fmt: str, artifact: Path | None) -> str:
    """The `nexus signature` command that gives a stored version its signature, in both of its forms,
    filled in with the model's input and output names where the file says them (placeholders if not)."""
    io = None
    if artifact is not None:
        try:
            io = model_io(artifact, fmt)
        except NexusError:
            io = None  # a file torch cannot read: the placeholders still say what to give
    head = f"nexus signature {model_name} --version {version}"
    if io is None or not io.inputs:
        samples, inputs = "--sample NAME=FILE.npy (one per input)", "--input NAME:DTYPE:DIMS (one per input)"
    else:
        samples = " ".join(f"--sample {n}={_placeholder(n)}.npy" for n in io.inputs)
        inputs = " ".join(f"--input {n}:DTYPE:DIMS" for n in io.inputs)
    if io is None or io.outputs is None:
        outputs = "--output NAME:DTYPE:DIMS (one per output)"
    else:
        outputs = " ".join(f"--output {n}:DTYPE:DIMS" for n in io.outputs)
    return f"{head} {samples} (or, dims without the batch: {head} {inputs} {outputs})"


def _placeholder(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name).upper() or "SAMPLE"


def describe(signature: Signature) -> list[str]:
    """One line per tensor: `input image float32[-1, 3, 8, 8]` (-1 first: the batch)."""
    return [
        f"{kind} {t.name} {t.dtype}{list(t.shape)}"
        for kind, tensors in (("input", signature.inputs), ("output", signature.outputs))
        for t in tensors
    ]

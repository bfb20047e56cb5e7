"""A signature read off one forward pass on sample inputs (`--sample NAME=FILE.npy`).

The model runs once, in-process on the CPU, on the arrays given; the dtypes and shapes of the inputs
and of what it returns are recorded, with the first dimension as the batch (-1). Inputs are named as
in the model file; outputs after a returned dict's keys, else `output` (one) or `output_0`, ...
(TorchScript), or as the format names them (torch.export, ONNX).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nexus.errors import SampleError, SignatureError
from nexus.registry.formats import TORCHSCRIPT, default_output_names, model_io
from nexus.registry.signature import check_signature, error_detail, load_runner, outputs_by_name
from nexus.tensors import DTYPES, Signature, TensorSpec, load_arrays


def load_samples(pairs: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    """`--sample NAME=FILE.npy` pairs -> arrays by input name (read as `nexus predict --input` reads them)."""
    return load_arrays(pairs, "--sample", SampleError)


def signature_from_samples(artifact: Path, fmt: str, samples: Mapping[str, Any]) -> Signature:
    """Run the model once on ``samples`` (input name -> array, first dimension the batch) and read the
    signature off its inputs and outputs.

    Raises:
        SampleError: the samples do not name the model's inputs, cannot be served, or the model fails on them.
        SignatureError: the model returns something Triton cannot serve batched.
    """
    import torch

    io = model_io(artifact, fmt)
    names = io.inputs
    if sorted(samples) != sorted(names):
        wanted = " ".join(f"--sample {n}=FILE.npy" for n in names)
        raise SampleError(
            f"samples are given for {', '.join(sorted(samples)) or 'no input'}, the model's inputs are "
            f"{', '.join(names)}; give one per input: {wanted}"
        )
    arrays = {n: np.asarray(samples[n]) for n in names}
    for name, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise SampleError(
                f"sample {name!r} is {array.dtype}, which cannot be served; save it as one of {', '.join(DTYPES)}"
            )
        if array.ndim == 0:
            raise SampleError(f"sample {name!r} is a scalar; give a batch (the first dimension is the batch)")
    batches = {a.shape[0] for a in arrays.values()}
    if len(batches) > 1:
        sizes = ", ".join(f"{n}: {a.shape[0]}" for n, a in arrays.items())
        raise SampleError(f"the samples' first dimensions differ ({sizes}); give every input the same batch size")
    (batch,) = batches
    run = load_runner(artifact, fmt, names, io.outputs)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays.values()]
    try:
        raw = run(tensors)
    except Exception as e:  # any failure of the model on the samples
        shapes = ", ".join(f"{n}{list(a.shape)}:{a.dtype}" for n, a in arrays.items())
        raise SampleError(
            f"the model fails on the samples {shapes} ({error_detail(e)}); give samples it accepts"
        ) from e
    outputs = []
    for name, value in _named(raw, fmt, io.outputs):
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            served = ", ".join(DTYPES)
            raise SignatureError(f"output {name!r} is {dtype}, which cannot be served; return one of {served}")
        if value.ndim == 0 or value.shape[0] != batch:
            raise SignatureError(
                f"output {name!r} is {list(value.shape)} for a batch of {batch}: its first dimension is not the "
                "batch; return one row per sample (or give --input/--output and publish with --batching none)"
            )
        outputs.append(TensorSpec(name, dtype, [-1, *value.shape[1:]]))
    inputs = [TensorSpec(n, a.dtype.name, [-1, *a.shape[1:]]) for n, a in arrays.items()]
    return Signature(inputs=inputs, outputs=outputs)


def _named(raw: Any, fmt: str, known: list[str] | None) -> list[tuple[str, Any]]:
    if isinstance(raw, dict):
        keys = [str(k) for k in raw]
        return list(zip(keys, outputs_by_name(raw, keys), strict=True))
    values = outputs_by_name(raw, [])
    names = known if fmt != TORCHSCRIPT and known and len(known) == len(values) else default_output_names(len(values))
    return list(zip(names, values, strict=True))


def signature_for(artifact: Path, fmt: str, signature: Signature | None, sample: Mapping[str, Any] | None) -> Signature:
    """The signature given, or read from ``sample`` (one of the two), checked by a forward pass."""
    if signature is not None and sample is not None:
        raise SignatureError("give a signature (--input/--output) or samples (--sample), not both")
    if sample is not None:
        signature = signature_from_samples(artifact, fmt, sample)
    if signature is None:
        raise SignatureError("give a signature (--input/--output) or samples (--sample NAME=FILE.npy)")
    check_signature(artifact, fmt, signature, batched=True)
    return signature

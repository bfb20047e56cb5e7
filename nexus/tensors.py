"""Tensors and their dtypes: the one table every other part of NexusML reads.

A dtype is recorded by its numpy-style name (``float32``), the spelling `.nexus_meta.json` has always
used. Wherever a user types one, any of the spellings they bring is accepted, in any case::

    numpy / NexusML   Triton (KServe v2)   config.pbtxt     torch
    float32           FP32                 TYPE_FP32        torch.float32 (torch.float)

Only the dtypes the Python backend's `model.py` can hand to torch are servable (:data:`DTYPES`); its
own ``TORCH_DTYPES`` table must agree with it (a test checks it, since `model.py` may not import
NexusML). Unsigned integers wider than 8 bits and strings are known (an ONNX model may declare them,
and its signature records them) but refused wherever a signature is served: :data:`UNSERVABLE`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.errors import NexusError, SignatureError


@dataclass(frozen=True)
class DType:
    """One servable dtype under each of its names."""

    #: numpy's name (bfloat16 has none in numpy, and keeps torch's): what metadata records.
    name: str
    #: Triton's and KServe v2's datatype: `FP32`; `config.pbtxt` spells it `TYPE_FP32`.
    triton: str
    #: torch's attribute name: `torch.float32`.
    torch: str

    @property
    def config_name(self) -> str:
        return f"TYPE_{self.triton}"

    @property
    def numpy(self) -> str | None:
        """numpy's name for the dtype; None for bfloat16, which numpy lacks."""
        return None if self.name == "bfloat16" else self.name

    @property
    def is_float(self) -> bool:
        return self.triton in ("FP16", "BF16", "FP32", "FP64")


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("bool", "BOOL", "bool"),
        DType("uint8", "UINT8", "uint8"),
        DType("int8", "INT8", "int8"),
        DType("int16", "INT16", "int16"),
        DType("int32", "INT32", "int32"),
        DType("int64", "INT64", "int64"),
        DType("float16", "FP16", "float16"),
        DType("bfloat16", "BF16", "bfloat16"),
        DType("float32", "FP32", "float32"),
        DType("float64", "FP64", "float64"),
    )
}

_WIDE_UNSIGNED = (
    "torch implements few operations on unsigned integers wider than 8 bits (not even addition); "
    "export the model with int32 or int64 tensors"
)
#: Dtypes a model may declare that the Python backend cannot serve: name -> (Triton's name, why not).
UNSERVABLE: dict[str, tuple[str, str]] = {
    "uint16": ("UINT16", _WIDE_UNSIGNED),
    "uint32": ("UINT32", _WIDE_UNSIGNED),
    "uint64": ("UINT64", _WIDE_UNSIGNED),
    "string": ("BYTES", "torch has no string tensors; tokenize outside the model and send token ids"),
}

#: torch's other names for the same dtypes (`torch.float` is float32). Bare `float`, `int`, ... are not
#: accepted: numpy reads `float` as float64 and torch as float32.
_TORCH_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
                  "short": "int16"}  # fmt: skip


def _spellings() -> dict[str, str]:
    """Every accepted spelling, lower-cased -> the canonical name (servable or not)."""
    found: dict[str, str] = {}
    for d in DTYPES.values():
        for spelling in (d.name, d.triton, d.config_name, f"torch.{d.torch}"):
            found[spelling.lower()] = d.name
        if d.numpy is not None:
            found[f"np.{d.numpy}"] = found[f"numpy.{d.numpy}"] = d.name
    for alias, name in _TORCH_ALIASES.items():
        found[f"torch.{alias}"] = name
    for name, (triton, _) in UNSERVABLE.items():
        # config.pbtxt names a string TYPE_STRING, KServe v2 names it BYTES
        for spelling in (name, triton, f"TYPE_{triton}", f"TYPE_{name}", f"torch.{name}", f"np.{name}"):
            found[spelling.lower()] = name
    return found


_SPELLINGS = _spellings()
ACCEPTED = f"{', '.join(DTYPES)} (or Triton's FP32 / TYPE_FP32, or torch.float32; any case)"


def dtype(text: str) -> DType:
    """The servable dtype for any accepted spelling (`float32`, `FP32`, `TYPE_FP32`, `torch.float32`; any case).

    Raises:
        SignatureError: an unknown spelling, named in the message with the accepted ones; or a dtype
            in :data:`UNSERVABLE`, with the reason.
    """
    return _servable(text)


def _servable(text: str, where: str = "") -> DType:
    found = _SPELLINGS.get(text.strip().lower())
    if found is None:
        raise SignatureError(f"{where}unknown dtype {text!r}; use one of {ACCEPTED}")
    if found in UNSERVABLE:
        raise SignatureError(f"{where}dtype {found} cannot be served by the Python backend: {UNSERVABLE[found][1]}")
    return DTYPES[found]


def canonical_dtype(text: str) -> str:
    """The name NexusML records for a servable dtype spelled any accepted way: `FP32` -> `float32`."""
    return dtype(text).name


def normalize_dtype(text: str) -> str:
    """The canonical name for any known spelling, servable or not (`UINT16` -> `uint16`); else ``text`` as is."""
    return _SPELLINGS.get(text.strip().lower(), text)


_BY_TRITON = {d.triton: d for d in DTYPES.values()}


def from_triton(datatype: str) -> DType | None:
    """The dtype for Triton's `FP32` or `TYPE_FP32`; None for one NexusML does not serve (BYTES, UINT64)."""
    return _BY_TRITON.get(datatype.strip().upper().removeprefix("TYPE_"))


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` includes the batch dimension; -1 marks a dynamic size.

    ``dtype`` is stored under its canonical name whatever the spelling given (`FP32` -> `float32`);
    a spelling NexusML does not know (`unknown`, `complex64`) is kept as given, and refused when the
    tensor is served (:meth:`servable_dtype`).
    """

    name: str
    dtype: str
    shape: list[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))

    def servable_dtype(self) -> DType:
        """The tensor's dtype, as the Python backend serves it.

        Raises:
            SignatureError: the dtype is unknown or cannot be served; the message names the tensor.
        """
        return _servable(self.dtype, where=f"tensor {self.name!r}: ")


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_DIMS = re.compile(r"^(-?\d+(?:,-?\d+)*)?$")


def parse_tensor_spec(text: str, batched: bool = True) -> TensorSpec:
    """`NAME:DTYPE:DIMS` (dims without the batch dimension, comma-separated, -1 for any) -> TensorSpec.

    The dtype may be spelled any way :func:`nexus.tensors.dtype` accepts (`float32`, `FP32`,
    `TYPE_FP32`, `torch.float32`, any case); the spec records its canonical name. A name may itself
    contain colons (`input:0`): the last two fields are the dtype and the dims.

    Raises:
        SignatureError: not of that form, or a dtype that is unknown or cannot be served.
    """
    parts = text.strip().rsplit(":", 2)
    if len(parts) != 3 or not _NAME.match(parts[0]) or not parts[1] or not _DIMS.match(parts[2]):
        raise SignatureError(f"{text!r} is not NAME:DTYPE:DIMS; write e.g. input__0:float32:3,224,224")
    name, dtype_text, dims_text = parts
    try:
        canonical = dtype(dtype_text).name
    except SignatureError as e:
        raise SignatureError(f"{text!r}: {e}") from e
    dims = [int(d) for d in dims_text.split(",")] if dims_text else []
    return TensorSpec(name=name, dtype=canonical, shape=([-1] if batched else []) + dims)


def parse_signature(inputs: list[str] | None, outputs: list[str] | None, batched: bool = True) -> Signature | None:
    """The signature given as `NAME:DTYPE:DIMS` texts (``--input``/``--output``), or None for neither."""
    if not inputs and not outputs:
        return None
    if not (inputs and outputs):
        raise SignatureError("give both --input and --output (one per tensor), or neither")
    return Signature(
        inputs=[parse_tensor_spec(t, batched) for t in inputs], outputs=[parse_tensor_spec(t, batched) for t in outputs]
    )


def load_arrays(pairs: Sequence[str], option: str, error: type[NexusError]) -> dict[str, Any]:
    """`NAME=FILE.npy` pairs, as ``option`` (`--input`, `--sample`) takes them, -> numpy arrays by name.

    Raises:
        error: a pair not of that form, a name given twice, or a file that is not one `.npy` array.
    """
    import numpy as np

    arrays: dict[str, Any] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise error(f"{pair!r} is not NAME=FILE.npy; write e.g. {option} input=batch.npy")
        if name in arrays:
            raise error(f"{option} {name}=... is given twice; give one file per input")
        path = Path(file)
        if not path.is_file():
            raise error(f"input file {path} does not exist; check the path in {option} {pair}")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            detail = (str(e).splitlines() or [""])[0] or type(e).__name__
            raise error(f"{path} is not a .npy array ({detail}); save it with numpy.save") from e
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise error(f"{path} is an .npz archive, not one array; save each input with numpy.save")
        arrays[name] = loaded
    return arrays

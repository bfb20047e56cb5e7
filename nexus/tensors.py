"""Tensors and their dtypes: the one table every other part of NexusML reads.

A dtype is recorded by its numpy-style name (``float32``), the spelling `.nexus_meta.json` has always
used. Wherever a user types one, any of the spellings they bring is accepted::

    numpy / NexusML   Triton (KServe v2)   config.pbtxt     torch
    float32           FP32                 TYPE_FP32        torch.float32 (torch.float)

Only the dtypes the Python backend's `model.py` can hand to torch are servable; its own
``TORCH_DTYPES`` table must agree with :data:`DTYPES` (a test checks it, since `model.py` may not
import NexusML). Unsigned integers wider than 8 bits are not among them: torch has no kernels for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus.errors import SignatureError


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

#: torch's other names for the same dtypes (`torch.float` is float32).
_TORCH_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
                  "short": "int16"}  # fmt: skip

_SPELLINGS: dict[str, str] = {}
for _d in DTYPES.values():
    for _spelling in (_d.name, _d.triton, _d.config_name, f"torch.{_d.torch}"):
        _SPELLINGS[_spelling.lower()] = _d.name
for _alias, _name in _TORCH_ALIASES.items():
    _SPELLINGS[f"torch.{_alias}"] = _name


def dtype(text: str) -> DType:
    """The dtype for any accepted spelling (`float32`, `FP32`, `TYPE_FP32`, `torch.float32`; any case).

    Raises:
        SignatureError: an unknown spelling, named in the message with the accepted ones.
    """
    found = _SPELLINGS.get(text.strip().lower())
    if found is None:
        raise SignatureError(
            f"unknown dtype {text!r}; use one of {', '.join(DTYPES)} (or Triton's FP32 / TYPE_FP32, or torch.float32)"
        )
    return DTYPES[found]


def canonical_dtype(text: str) -> str:
    """The name NexusML records for a dtype spelled any accepted way: `FP32` -> `float32`."""
    return dtype(text).name


_BY_TRITON = {d.triton: d for d in DTYPES.values()}


def from_triton(datatype: str) -> DType | None:
    """The dtype for Triton's `FP32` or `TYPE_FP32`; None for one NexusML does not serve (BYTES, UINT64)."""
    return _BY_TRITON.get(datatype.upper().removeprefix("TYPE_"))


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` includes the batch dimension; -1 marks a dynamic size."""

    name: str
    dtype: str
    shape: list[int]


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

"""Recognise a model file's format from its bytes, and read its input/output signature if it has one.

==============  ===========================================  =========  ==========================
format          how it is recognised                         extension  signature
==============  ===========================================  =========  ==========================
torchscript     zip archive with `<name>/code/` (jit.save)   .pt        names and count only (1)
torch_export    zip archive with `<name>/archive_format`     .pt2       from the exported graph (2)
onnx            protobuf `ModelProto` with a graph            .onnx      from graph inputs/outputs
==============  ===========================================  =========  ==========================

(1) A TorchScript file keeps its inputs' names and how many outputs it returns, not their dtypes or
shapes (:func:`model_io`): a signature is given at store time, or later with `nexus signature`.
(2) Outputs are named `output` (one) or `output_0`, `output_1`, ... (several), or after the keys of
a returned dict or namedtuple; inputs keep the names of the exported module's arguments.

A `torch.save` pickle (an `nn.Module` or a state_dict) is refused: it cannot be served without its
Python class, and unpickling runs arbitrary code. Nothing here unpickles anything.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.errors import PickledModelError, UnsupportedFormatError
from nexus.registry.metadata import EXTENSIONS
from nexus.tensors import Signature, TensorSpec

TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch_export"
ONNX = "onnx"


# onnx.TensorProto.DataType -> canonical dtype names: keys of nexus.tensors.DTYPES, or of UNSERVABLE (refused at
# publish); tests/test_tensors.py checks both
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}  # fmt: skip


@dataclass(frozen=True)
class ArtifactInfo:
    format: str
    signature: Signature | None

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def inspect_artifact(path: Path) -> ArtifactInfo:
    """Detect the format of ``path`` and read its signature where the format carries one."""
    fmt = detect_format(path)
    if fmt == TORCH_EXPORT:
        return ArtifactInfo(fmt, _export_signature(path))
    if fmt == ONNX:
        return ArtifactInfo(fmt, _onnx_signature(path))
    return ArtifactInfo(fmt, None)


def detect_format(path: Path) -> str:
    """One of :data:`TORCHSCRIPT`, :data:`TORCH_EXPORT`, :data:`ONNX`; raises for anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise UnsupportedFormatError(path, "an empty file")
    if zipfile.is_zipfile(path):
        return _zip_format(path)
    if head[:1] == b"\x80":  # pickle protocol 2+: the legacy (pre-1.6) torch.save format
        raise PickledModelError(path)
    if _looks_like_onnx(path):
        return ONNX
    raise UnsupportedFormatError(path, "not a recognised model file")


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise UnsupportedFormatError(path, f"a damaged zip archive ({e})") from e
    parts = [n.split("/", 1)[1] for n in names if "/" in n]
    if any(p.startswith("code/") for p in parts) and "constants.pkl" in parts:
        return TORCHSCRIPT
    if "archive_format" in parts or any(p.startswith("models/") for p in parts):
        return TORCH_EXPORT
    if "data.pkl" in parts:
        raise PickledModelError(path)
    raise UnsupportedFormatError(path, "a zip archive that is not a PyTorch model")


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        return path.suffix == ".onnx"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises DecodeError, ValueError, ...: all mean "not ONNX"
        return False
    return bool(model.ir_version) and bool(model.graph.node)


def _dims(shape: Any) -> list[int]:
    return [int(d) if isinstance(d, int) else -1 for d in shape]


def _export_signature(path: Path) -> Signature:
    import torch

    try:
        with open(path, "rb") as f:  # a file object: torch warns about names without a .pt2 suffix
            program = torch.export.load(f)
    except Exception as e:
        raise UnsupportedFormatError(
            path, f"a torch.export archive that torch {torch.__version__} cannot load ({e})"
        ) from e
    user_inputs = set(program.graph_signature.user_inputs)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            inputs.append(_spec(node.name, node.meta.get("val")))
        elif node.op == "output":
            values = [getattr(a, "meta", {}).get("val") for a in node.args[0]]
            names = _keys(program.call_spec.out_spec, len(values)) or default_output_names(len(values))
            outputs = [_spec(n, v) for n, v in zip(names, values, strict=True)]
    return Signature(inputs=inputs, outputs=outputs)


def default_output_names(count: int) -> list[str]:
    """`output` for one output, `output_0`, `output_1`, ... for several."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _keys(spec: Any, count: int) -> list[str] | None:
    """The keys of a returned dict or namedtuple of ``count`` tensors, from the program's output spec."""
    if spec is None:
        return None
    children = spec.children() if callable(getattr(spec, "children", None)) else getattr(spec, "children_specs", [])
    if len(children) != count or any(c.num_leaves != 1 for c in children):
        return None  # a single tensor, or a nested structure: positions are the only names
    if spec.type is dict and all(isinstance(k, str) for k in spec.context):
        return [str(k) for k in spec.context]
    fields = getattr(spec.type, "_fields", None) or getattr(spec.context, "_fields", None)
    return [str(f) for f in fields] if fields and len(fields) == count else None


@dataclass(frozen=True)
class ModelIO:
    """What a model file says about its inputs and outputs, without running it."""

    inputs: list[str]
    #: None where the names are only known by running the model (a TorchScript dict output).
    outputs: list[str] | None


def model_io(path: Path, fmt: str) -> ModelIO:
    """The input names (in call order) and output names of the model file at ``path``.

    TorchScript keeps its `forward`'s argument names and returned type: a tuple of N tensors gives
    `output_0` ... `output_{N-1}`, a tensor `output`, a dict unknown names.

    Raises:
        UnsupportedFormatError: the file cannot be loaded as ``fmt``.
    """
    if fmt != TORCHSCRIPT:
        signature = _export_signature(path) if fmt == TORCH_EXPORT else _onnx_signature(path)
        return ModelIO([s.name for s in signature.inputs], [s.name for s in signature.outputs])
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        schema = module.forward.schema
    except Exception as e:
        raise UnsupportedFormatError(path, f"a TorchScript archive that torch cannot load ({e})") from e
    inputs = [a.name for a in schema.arguments if a.name != "self"]
    returned = schema.returns[0].type if len(schema.returns) == 1 else None
    if isinstance(returned, torch.TupleType):
        return ModelIO(inputs, default_output_names(len(returned.elements())))
    if isinstance(returned, torch.DictType):
        return ModelIO(inputs, None)
    return ModelIO(inputs, default_output_names(1))


def _spec(name: str, value: Any) -> TensorSpec:
    if value is None or not hasattr(value, "shape"):
        return TensorSpec(name=name, dtype="unknown", shape=[])
    return TensorSpec(name=name, dtype=str(value.dtype).removeprefix("torch."), shape=_dims(value.shape))


def _onnx_signature(path: Path) -> Signature:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return TensorSpec(name=value.name, dtype=_ONNX_DTYPES.get(tensor.elem_type, "unknown"), shape=dims)

    return Signature(
        inputs=[spec(v) for v in graph.input if v.name not in initializers],
        outputs=[spec(v) for v in graph.output],
    )

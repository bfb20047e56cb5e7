"""One dtype table (nexus/tensors.py): every spelling a user brings, and every other table that must agree with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from helpers import GitRepo, make_torchscript
from nexus.errors import PredictError, SignatureError
from nexus.registry import Project
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions, parse_config, read_serving, render_config
from nexus.serving.predict import NUMPY_DTYPES, random_inputs
from nexus.tensors import (
    DTYPES,
    UNSERVABLE,
    DType,
    Signature,
    TensorSpec,
    canonical_dtype,
    dtype,
    from_triton,
    parse_tensor_spec,
)

ROOT = Path(__file__).parents[1]
TEMPLATE = ROOT / "model_repository_templates" / "python_backend" / "model.py"


def spellings(d: DType) -> list[str]:
    """Every way a user may write ``d``: numpy's, Triton's, config.pbtxt's and torch's names, in several cases."""
    names = [d.name, d.triton, d.config_name, f"torch.{d.torch}"]
    if d.numpy is not None:
        names.append(f"np.{d.numpy}")
    return [*names, *(n.upper() for n in names), *(n.lower() for n in names), *(n.title() for n in names)]


@pytest.mark.parametrize("d", DTYPES.values(), ids=list(DTYPES))
def test_every_spelling_of_a_servable_dtype_gives_its_canonical_name(d: DType) -> None:
    for text in spellings(d):
        assert canonical_dtype(text) == d.name, text
        assert parse_tensor_spec(f"x:{text}:4") == TensorSpec("x", d.name, [-1, 4]), text
        assert TensorSpec("x", text, [1]).dtype == d.name, text
    assert from_triton(d.triton) == from_triton(d.config_name) == d


def test_torchs_other_names_are_accepted_but_bare_ambiguous_ones_are_not() -> None:
    aliases = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32"}
    for alias, name in aliases.items():
        assert getattr(torch, alias) == getattr(torch, name)  # the table says what torch says
        assert canonical_dtype(f"torch.{alias}") == name
    for bare in ("float", "double", "int", "long"):  # numpy reads `float` as float64, torch as float32
        with pytest.raises(SignatureError, match=f"unknown dtype '{bare}'"):
            dtype(bare)


@pytest.mark.parametrize("d", DTYPES.values(), ids=list(DTYPES))
def test_each_name_in_the_table_is_the_one_numpy_triton_and_torch_use(d: DType) -> None:
    assert str(getattr(torch, d.torch)) == f"torch.{d.torch}"
    assert model_config_pb2.DataType.Value(d.config_name) > 0
    if d.numpy is None:
        assert d.triton == "BF16"  # the one dtype numpy lacks
        return
    assert np.dtype(d.numpy).name == d.name
    assert np_to_triton_dtype(np.dtype(d.numpy)) == d.triton
    assert np.dtype(triton_to_np_dtype(d.triton)) == np.dtype(d.numpy)
    assert torch.empty(0, dtype=getattr(torch, d.torch)).numpy().dtype == np.dtype(d.numpy)


@pytest.mark.parametrize("text", ["flot32", "complex64", "FP8", "x", "torch.cfloat"])
def test_an_unknown_dtype_is_one_line_naming_it_and_the_accepted_spellings(text: str) -> None:
    with pytest.raises(SignatureError) as e:
        parse_tensor_spec(f"in0:{text}:4")
    message = str(e.value)
    assert "\n" not in message
    assert f"unknown dtype {text!r}" in message
    for accepted in (*DTYPES, "FP32", "TYPE_FP32", "torch.float32"):
        assert accepted in message


@pytest.mark.parametrize("text", ["uint16", "UINT32", "TYPE_UINT64", "torch.uint16", "BYTES", "TYPE_STRING", "string"])
def test_unservable_dtypes_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(SignatureError, match="cannot be served by the Python backend: torch"):
        parse_tensor_spec(f"x:{text}:4")
    assert from_triton(text) is None


def test_the_unservable_names_are_the_ones_numpy_and_triton_use() -> None:
    for name, (triton, _) in UNSERVABLE.items():
        assert model_config_pb2.DataType.Value(f"TYPE_{name.upper() if name == 'string' else triton}") > 0
        if name != "string":
            assert np_to_triton_dtype(np.dtype(name)) == triton
    assert np_to_triton_dtype(np.dtype(object)) == UNSERVABLE["string"][0]


def test_tensor_specs_take_a_name_with_colons_and_refuse_other_shapes() -> None:
    assert parse_tensor_spec("input:0:TYPE_FP32:3,4") == TensorSpec("input:0", "float32", [-1, 3, 4])
    assert parse_tensor_spec("x:fp32:", batched=False) == TensorSpec("x", "float32", [])
    for bad in ("x:FP32", "x::4", ":FP32:4", "x:FP32:4,", "x:FP32:a", "0x:FP32:4"):
        with pytest.raises(SignatureError, match="is not NAME:DTYPE:DIMS"):
            parse_tensor_spec(bad)


def _version(fmt: str = "torchscript") -> ModelVersion:
    return ModelVersion("m", 1, "c" * 40, "x", True, "0" * 64, 1, fmt, "2026-01-01T00:00:00Z", "me")


def test_a_rendered_config_reads_back_to_canonical_names_and_a_foreign_type_is_refused() -> None:
    sig = Signature([TensorSpec("a", "TYPE_BF16", [-1, 2]), TensorSpec("b", "torch.long", [-1])],
                    [TensorSpec("y", "FP16", [-1, 2])])  # fmt: skip
    config = render_config("m", _version(), sig, ServingOptions(), "model.pt")
    types = [model_config_pb2.DataType.Name(t.data_type) for t in [*config.input, *config.output]]
    assert types == ["TYPE_BF16", "TYPE_INT64", "TYPE_FP16"]
    _, back = read_serving(config)
    assert [t.dtype for t in [*back.inputs, *back.outputs]] == ["bfloat16", "int64", "float16"]
    config.input[0].data_type = model_config_pb2.DataType.Value("TYPE_UINT16")  # as if edited by hand
    with pytest.raises(SignatureError, match="tensor 'a' TYPE_UINT16, which NexusML does not serve"):
        read_serving(config)
    with pytest.raises(SignatureError, match="tensor 'x': dtype uint16 cannot be served by the Python backend"):
        render_config(
            "m", _version(), Signature([TensorSpec("x", "uint16", [-1, 2])], sig.outputs), ServingOptions(), "a"
        )


# --- the CLI ---------------------------------------------------------------------------------------


def test_store_and_publish_take_triton_spellings_and_record_numpy_names(
    repo: GitRepo, tmp_path: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    model = make_torchscript(tmp_path / "m.pt")  # Linear 4 -> 8 -> 3: its tensors are named by the user
    run_nexus(
        "store", str(model), "m", "--input", "INPUT0:FP32:4", "--output", "OUTPUT0:FP32:3", cwd=repo.root, check=True
    )
    stored = Project.open(repo.root, env={}).resolve("m", None, None).signature
    assert stored == Signature([TensorSpec("INPUT0", "float32", [-1, 4])], [TensorSpec("OUTPUT0", "float32", [-1, 3])])
    meta = json.loads((repo.root / ".nexus_meta.json").read_text(encoding="utf-8"))
    assert '"dtype": "float32"' in json.dumps(meta)
    assert "FP32" not in json.dumps(meta)

    run_nexus("publish", "m", cwd=repo.root, check=True)
    config = parse_config(
        (repo.root / ".nexus" / "model_repository" / "m" / "config.pbtxt").read_text(encoding="utf-8")
    )
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("INPUT0", "TYPE_FP32", [4])
    ]
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        ("OUTPUT0", "TYPE_FP32", [3])
    ]


def test_store_refuses_an_unknown_dtype_in_one_line(
    repo: GitRepo, tmp_path: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    model = make_torchscript(tmp_path / "m.pt")
    result = run_nexus("store", str(model), "m", "--input", "x:FP33:4", "--output", "y:FP32:3", cwd=repo.root)
    assert result.returncode == 1
    assert "unknown dtype 'FP33'" in result.stderr
    assert "TYPE_FP32" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo.root / ".nexus_meta.json").exists()


def _uint16_onnx(path: Path) -> Path:
    """An ONNX model with a uint16 input: y = float(x)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.UINT16, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_publishing_an_onnx_model_with_a_uint16_input_says_the_backend_cannot_serve_it(
    repo: GitRepo, tmp_path: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    run_nexus("store", str(_uint16_onnx(tmp_path / "m.onnx")), "m", cwd=repo.root, check=True)
    stored = Project.open(repo.root, env={}).resolve("m", None, None).signature
    assert stored is not None
    assert stored.inputs == [TensorSpec("x", "uint16", [-1, 4])]  # recorded as the model declares it
    result = run_nexus("publish", "m", cwd=repo.root)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "tensor 'x': dtype uint16 cannot be served by the Python backend" in lines[0]
    assert "int32 or int64" in lines[0]
    assert not (repo.root / ".nexus" / "model_repository").exists()


# --- tables that must stay apart, and agree -----------------------------------------------------------


def test_model_py_serves_exactly_the_servable_dtypes_as_the_same_torch_dtypes(backend_module: ModuleType) -> None:
    table = backend_module.TORCH_DTYPES
    assert set(table) == {d.triton for d in DTYPES.values()}
    for d in DTYPES.values():
        assert table[d.triton] == getattr(torch, d.torch), d.triton
        numpy = backend_module._numpy_dtype(table[d.triton])
        assert numpy == (None if d.numpy is None else np.dtype(d.numpy)), d.triton


def test_the_locustfile_table_is_the_servable_numpy_dtypes_little_endian() -> None:
    code = "import json, locustfile; print(json.dumps(locustfile.DTYPES))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "loadtest", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(table) == {d.triton for d in DTYPES.values() if d.numpy}
    for d in DTYPES.values():
        if d.numpy:
            assert np.dtype(table[d.triton]) == np.dtype(d.numpy).newbyteorder("<"), d.triton


def test_predicts_table_is_the_servable_numpy_dtypes_and_bf16_is_a_clear_error() -> None:
    assert {d.triton: np.dtype(d.numpy) for d in DTYPES.values() if d.numpy} == NUMPY_DTYPES
    assert "BF16" not in NUMPY_DTYPES
    with pytest.raises(PredictError, match="input 'x' is BF16, which nexus predict cannot send"):
        random_inputs({"inputs": [{"name": "x", "datatype": "BF16", "shape": [-1, 2]}]})
    ints = random_inputs({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 3]}]}, batch=2)["ids"]
    assert ints.dtype == np.int64
    assert ints.shape == (2, 3)


def test_the_bench_client_names_every_numpy_dtype_as_triton_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _bench_client

    for d in DTYPES.values():
        if d.numpy:
            assert _bench_client.DATATYPES[d.numpy] == np_to_triton_dtype(np.dtype(d.numpy))
    request = _bench_client.infer_request("h", 1, "m", {"x": np.zeros((2, 3), np.float16)}, ["y"])
    assert b'"datatype":"FP16"' in request


def test_the_onnx_table_names_canonical_dtypes_as_onnx_does() -> None:
    import onnx
    from onnx import helper

    from nexus.registry.formats import _ONNX_DTYPES

    for elem_type, name in _ONNX_DTYPES.items():
        assert name in DTYPES or name in UNSERVABLE, name
        numpy = helper.tensor_dtype_to_np_dtype(elem_type)
        assert (name == "string") if numpy == np.dtype(object) else numpy.name == name, elem_type
    onnx_names = {onnx.TensorProto.DataType.Name(t) for t in _ONNX_DTYPES}
    assert {"FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "INT64", "BOOL", "UINT8"} <= onnx_names

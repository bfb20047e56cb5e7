"""Unit tests of the Python-backend `model.py`, in-process, with a stand-in for Triton's utils module.

The same module runs inside a real Triton server in `test_triton_serving.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import json_format

import fake_pb_utils as pb
from helpers import make_onnx, make_torch_export, make_torchscript
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions, render_config
from nexus.tensors import Signature, TensorSpec

TEMPLATE = Path(__file__).parents[1] / "model_repository_templates" / "python_backend" / "model.py"


class TwoInTwoOut(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a * 2 + b.sum(dim=1, keepdim=True).to(a.dtype), (b + 1).to(torch.int32)


class TokenPooler(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(100, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.embedding(ids) * mask.unsqueeze(-1).to(torch.float32)).sum(dim=1)


def _version(fmt: str) -> ModelVersion:
    return ModelVersion("m", 1, "c" * 40, "x", True, "0" * 64, 1, fmt, "2026-01-01T00:00:00Z", "me")


def load_instance(
    module: ModuleType,
    folder: Path,
    artifact: Path,
    fmt: str,
    signature: Signature,
    options: ServingOptions | None = None,
    instance_kind: str = "CPU",
) -> Any:
    """Lay out `<folder>/1/<artifact>` and initialise the backend model on it, as Triton would."""
    version_dir = folder / "1"
    version_dir.mkdir(parents=True)
    name = f"model{artifact.suffix}"
    (version_dir / name).write_bytes(artifact.read_bytes())
    config = render_config("m", _version(fmt), signature, options or ServingOptions(), name)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(folder),
            "model_version": "1",
            "model_instance_kind": instance_kind,
            "model_instance_device_id": "0",
        }
    )
    return model


MLP_SIG = Signature([TensorSpec("input", "float32", [-1, 4])], [TensorSpec("output", "float32", [-1, 3])])


def count_forward_passes(model: Any) -> list[int]:
    sizes: list[int] = []
    run = model.run

    def counting(inputs: list[torch.Tensor], names: list[str]) -> Any:
        sizes.append(inputs[0].shape[0])
        return run(inputs, names)

    model.run = counting
    return sizes


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_a_batch_of_requests_is_one_forward_pass_with_outputs_split_back(
    backend_module: ModuleType, tmp_path: Path, fmt: str
) -> None:
    makers: dict[str, Callable[[Path], Path]] = {
        "torchscript": make_torchscript,
        "torch_export": make_torch_export,
        "onnx": make_onnx,
    }
    artifact = makers[fmt](tmp_path / {"torchscript": "a.pt", "torch_export": "a.pt2", "onnx": "a.onnx"}[fmt])
    input_name = "x" if fmt == "onnx" else "input"
    signature = Signature([TensorSpec(input_name, "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 3])])
    model = load_instance(backend_module, tmp_path / "repo", artifact, fmt, signature)
    passes = count_forward_passes(model)
    batches = [np.random.default_rng(i).standard_normal((n, 4)).astype(np.float32) for i, n in enumerate([1, 3, 2])]

    responses = model.execute([pb.InferenceRequest(**{input_name: b}) for b in batches])

    assert passes == [6]
    reference = _reference(fmt, artifact, np.concatenate(batches))
    offsets = np.cumsum([0] + [len(b) for b in batches])
    for response, start, stop in zip(responses, offsets[:-1], offsets[1:], strict=True):
        assert not response.has_error()
        torch.testing.assert_close(response.output("y"), reference[start:stop])


def _reference(fmt: str, artifact: Path, x: np.ndarray) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        return torch.from_numpy(ort.InferenceSession(str(artifact)).run(None, {"x": x})[0])
    module = torch.jit.load(str(artifact)) if fmt == "torchscript" else torch.export.load(str(artifact)).module()
    with torch.inference_mode():
        return module(torch.from_numpy(x))


def test_a_bad_request_fails_alone_and_the_rest_are_answered(backend_module: ModuleType, tmp_path: Path) -> None:
    model = load_instance(backend_module, tmp_path, make_torchscript(tmp_path / "a.pt"), "torchscript", MLP_SIG)
    passes = count_forward_passes(model)
    good = np.ones((2, 4), np.float32)
    requests = [
        pb.InferenceRequest(input=good),
        pb.InferenceRequest(input=np.ones((2, 4), np.float64)),
        pb.InferenceRequest(input=np.ones((2, 5), np.float32)),
        pb.InferenceRequest(other=good),
        pb.InferenceRequest(input=good),
    ]

    responses = model.execute(requests)

    assert passes == [4]
    assert [r.has_error() for r in responses] == [False, True, True, True, False]
    assert responses[1].error.message() == "input 'input' has dtype float64, expected FP32"
    assert responses[2].error.message() == "input 'input' has shape [2, 5], expected [batch, [4]]"
    assert responses[3].error.message() == "input 'input' is missing"
    torch.testing.assert_close(responses[0].output("output"), responses[4].output("output"))


def test_a_dtype_numpy_cannot_hold_is_refused_by_name(backend_module: ModuleType, tmp_path: Path) -> None:
    model = load_instance(backend_module, tmp_path, make_torchscript(tmp_path / "a.pt"), "torchscript", MLP_SIG)
    good = np.ones((1, 4), np.float32)

    bad, ok = model.execute(
        [pb.InferenceRequest(input=torch.ones(1, 4, dtype=torch.bfloat16)), pb.InferenceRequest(input=good)]
    )

    assert bad.error.message() == "input 'input' has dtype bfloat16, expected FP32"
    assert not ok.has_error()


def test_batch_outputs_are_split_as_views_of_one_array(backend_module: ModuleType, tmp_path: Path) -> None:
    model = load_instance(backend_module, tmp_path, make_torchscript(tmp_path / "a.pt"), "torchscript", MLP_SIG)
    batches = [np.full((n, 4), n, np.float32) for n in (2, 1, 3)]

    responses = model.execute([pb.InferenceRequest(input=b) for b in batches])

    outputs = [r.output("output") for r in responses]
    assert [o.shape[0] for o in outputs] == [2, 1, 3]
    # one conversion per batch: every request's output is a row range of the same buffer, in request order
    base = outputs[0].data_ptr()
    assert [o.data_ptr() - base for o in outputs] == [0, 2 * 3 * 4, 3 * 3 * 4]
    reference = torch.jit.load(str(tmp_path / "a.pt"))
    with torch.inference_mode():
        torch.testing.assert_close(torch.cat(outputs), reference(torch.from_numpy(np.concatenate(batches))))


def test_an_exception_in_the_model_answers_every_request_with_an_error(
    backend_module: ModuleType, tmp_path: Path
) -> None:
    model = load_instance(backend_module, tmp_path, make_torchscript(tmp_path / "a.pt"), "torchscript", MLP_SIG)

    def broken(inputs: list[torch.Tensor], names: list[str]) -> Any:
        raise RuntimeError("CUDA out of memory")

    model.run = broken
    responses = model.execute([pb.InferenceRequest(input=np.ones((1, 4), np.float32)) for _ in range(3)])

    assert all(r.has_error() for r in responses)
    assert (
        "the model failed on a batch of 1 request(s): RuntimeError: CUDA out of memory" in responses[0].error.message()
    )
    assert any(level == "error" and text.startswith(responses[0].error.message()) for level, text in pb.Logger.messages)


def test_two_inputs_two_outputs_with_mixed_dtypes(backend_module: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "two.pt"
    torch.jit.script(TwoInTwoOut()).save(str(path))
    signature = Signature(
        [TensorSpec("a", "float16", [-1, 3]), TensorSpec("b", "int64", [-1, 2])],
        [TensorSpec("sum", "float16", [-1, 3]), TensorSpec("plus_one", "int32", [-1, 2])],
    )
    model = load_instance(backend_module, tmp_path, path, "torchscript", signature)
    a = [np.full((n, 3), i, np.float16) for i, n in enumerate([2, 1])]
    b = [np.arange(n * 2, dtype=np.int64).reshape(n, 2) for n in [2, 1]]

    responses = model.execute([pb.InferenceRequest(a=x, b=y) for x, y in zip(a, b, strict=True)])

    for x, y, r in zip(a, b, responses, strict=True):
        expected_sum, expected_plus = TwoInTwoOut()(torch.from_numpy(x), torch.from_numpy(y))
        torch.testing.assert_close(r.output("sum"), expected_sum)
        torch.testing.assert_close(r.output("plus_one"), expected_plus)


TOKEN_SIG = Signature(
    [TensorSpec("ids", "int64", [-1, -1]), TensorSpec("mask", "bool", [-1, -1])],
    [TensorSpec("pooled", "float32", [-1, 8])],
)


def token_pooler(folder: Path) -> tuple[TokenPooler, Path]:
    """The token-pooling model and its TorchScript file."""
    pooler = TokenPooler().eval()
    path = folder / "tok.pt"
    torch.jit.script(pooler).save(str(path))
    return pooler, path


def test_int64_token_inputs_and_bool_masks(backend_module: ModuleType, tmp_path: Path) -> None:
    pooler, path = token_pooler(tmp_path)
    model = load_instance(backend_module, tmp_path, path, "torchscript", TOKEN_SIG)
    ids = np.random.default_rng(0).integers(0, 100, (3, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)

    responses = model.execute([pb.InferenceRequest(ids=ids[i : i + 1], mask=mask[i : i + 1]) for i in range(3)])

    with torch.inference_mode():
        expected = pooler(torch.from_numpy(ids), torch.from_numpy(mask))
    torch.testing.assert_close(torch.cat([r.output("pooled") for r in responses]), expected)


BF16_SIG = Signature([TensorSpec("x", "bfloat16", [-1, 4])], [TensorSpec("y", "bfloat16", [-1, 2])])


def bf16_linear(folder: Path) -> tuple[torch.nn.Module, Path]:
    """A bfloat16 Linear(4, 2) and its TorchScript file."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 2).to(torch.bfloat16).eval()
    path = folder / "bf16.pt"
    torch.jit.script(linear).save(str(path))
    return linear, path


def test_bfloat16_crosses_through_dlpack(backend_module: ModuleType, tmp_path: Path) -> None:
    linear, path = bf16_linear(tmp_path)
    model = load_instance(backend_module, tmp_path, path, "torchscript", BF16_SIG)
    x = torch.randn(2, 4).to(torch.bfloat16)

    (response,) = model.execute([pb.InferenceRequest(x=x)])

    with torch.inference_mode():
        torch.testing.assert_close(response.output("y"), linear(x))


def test_without_batching_each_request_runs_on_its_own(backend_module: ModuleType, tmp_path: Path) -> None:
    signature = Signature([TensorSpec("input", "float32", [1, 4])], [TensorSpec("output", "float32", [1, 3])])
    model = load_instance(
        backend_module,
        tmp_path,
        make_torchscript(tmp_path / "a.pt"),
        "torchscript",
        signature,
        ServingOptions(batching=False),
    )
    passes = count_forward_passes(model)
    responses = model.execute([pb.InferenceRequest(input=np.ones((1, 4), np.float32)) for _ in range(2)])
    assert passes == [1, 1]
    assert not any(r.has_error() for r in responses)


def test_a_request_whose_values_break_the_model_fails_alone(backend_module: ModuleType, tmp_path: Path) -> None:
    pooler, path = token_pooler(tmp_path)
    model = load_instance(backend_module, tmp_path, path, "torchscript", TOKEN_SIG)
    passes = count_forward_passes(model)
    ids = [np.array([[1, 2]]), np.array([[1000, 2]]), np.array([[3, 4]])]  # 1000 is outside the vocabulary
    mask = np.ones((1, 2), dtype=bool)

    responses = model.execute([pb.InferenceRequest(ids=i, mask=mask) for i in ids])

    assert passes == [3, 1, 1, 1]
    assert [r.has_error() for r in responses] == [False, True, False]
    assert "batch of 1 request(s)" in responses[1].error.message()
    with torch.inference_mode():
        torch.testing.assert_close(responses[2].output("pooled"), pooler(torch.tensor([[3, 4]]), torch.tensor(mask)))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")


def load_on_gpu(module: ModuleType, folder: Path, artifact: Path, fmt: str, signature: Signature) -> Any:
    return load_instance(module, folder, artifact, fmt, signature, ServingOptions(kind="gpu"), instance_kind="GPU")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_gpu_instance_runs_on_cuda_and_takes_gpu_tensors_without_copies(
    backend_module: ModuleType, tmp_path: Path, fmt: str
) -> None:
    artifact = (make_torchscript if fmt == "torchscript" else make_torch_export)(tmp_path / f"a.{fmt}")
    signature = Signature([TensorSpec("input", "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 3])])
    model = load_on_gpu(backend_module, tmp_path / "repo", artifact, fmt, signature)
    assert model.device.type == "cuda"
    seen: list[int] = []
    run = model.run

    def spy(inputs: list[torch.Tensor], names: list[str]) -> Any:
        seen.append(inputs[0].data_ptr())
        return run(inputs, names)

    model.run = spy
    x = torch.randn(5, 4, device="cuda")

    (response,) = model.execute([pb.InferenceRequest(input=x)])

    assert seen == [x.data_ptr()], "a single GPU request must reach the model without a copy"
    assert response.output("y").is_cuda
    reference = _reference(fmt, artifact, x.cpu().numpy())
    torch.testing.assert_close(response.output("y").cpu(), reference)

    # a batch of GPU and CPU tensors is concatenated on the GPU and split back per request
    batch = [torch.randn(2, 4, device="cuda"), torch.randn(3, 4)]
    responses = model.execute([pb.InferenceRequest(input=t) for t in batch])
    for t, r in zip(batch, responses, strict=True):
        torch.testing.assert_close(r.output("y").cpu(), _reference(fmt, artifact, t.cpu().numpy()))


@needs_cuda
@pytest.mark.gpu
def test_gpu_instance_takes_cpu_tensors_and_bf16(backend_module: ModuleType, tmp_path: Path) -> None:
    linear, path = bf16_linear(tmp_path)
    model = load_on_gpu(backend_module, tmp_path, path, "torchscript", BF16_SIG)
    x = torch.randn(3, 4).to(torch.bfloat16)

    (response,) = model.execute([pb.InferenceRequest(x=x)])

    assert response.output("y").is_cuda
    with torch.inference_mode():
        torch.testing.assert_close(response.output("y").cpu(), linear.cuda()(x.cuda()).cpu())


@needs_cuda
@pytest.mark.gpu
def test_onnx_on_a_gpu_instance_still_answers(backend_module: ModuleType, tmp_path: Path) -> None:
    artifact = make_onnx(tmp_path / "a.onnx")
    signature = Signature([TensorSpec("x", "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 3])])
    model = load_on_gpu(backend_module, tmp_path / "repo", artifact, "onnx", signature)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (response,) = model.execute([pb.InferenceRequest(x=torch.from_numpy(x).cuda())])
    torch.testing.assert_close(response.output("y").cpu(), _reference("onnx", artifact, x))

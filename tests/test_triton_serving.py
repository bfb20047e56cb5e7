"""`nexus publish` output served by a real Triton server (the binary in the nvidia-pytriton wheel).

One repository holds every model; Triton starts once for the module on free ports.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import S3Server
from helpers import GitRepo, free_port, make_onnx, make_torch_export, make_torchscript
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions
from nexus.serving.publish import publish
from nexus.serving.server import TritonServer
from nexus.tensors import Signature, TensorSpec
from test_backend_model import TokenPooler, TwoInTwoOut

pytestmark = pytest.mark.slow


class RowSum(torch.nn.Module):
    """One value per sample: the output has no dimension besides the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)


@dataclass
class Served:
    server: TritonServer
    artifacts: dict[str, Path]

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One KServe v2 JSON request over plain HTTP."""
        body = {
            "inputs": [
                {"name": k, "shape": list(v.shape), "datatype": _DTYPES[v.dtype.str[1:]], "data": v.flatten().tolist()}
                for k, v in inputs.items()
            ]
        }
        request = urllib.request.Request(
            f"{self.server.url}/v2/models/{model}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())
        return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}

    def stats(self, model: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.server.url}/v2/models/{model}/stats", timeout=10) as r:
            stats: dict[str, Any] = json.loads(r.read())["model_stats"][0]
            return stats


_DTYPES = {"f4": "FP32", "f2": "FP16", "i8": "INT64", "i4": "INT32", "b1": "BOOL"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    repo = GitRepo.create(root / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    files = root / "files"
    files.mkdir()
    artifacts = {
        "ts": make_torchscript(files / "mlp.pt"),
        "exp": make_torch_export(files / "mlp.pt2"),
        "onx": make_onnx(files / "mlp.onnx"),
        "two": files / "two.pt",
        "tok": files / "tok.pt",
    }
    artifacts["sum"] = files / "sum.pt"
    torch.jit.script(RowSum()).save(str(artifacts["sum"]))
    torch.jit.script(TwoInTwoOut()).save(str(artifacts["two"]))
    torch.jit.script(TokenPooler().eval()).save(str(artifacts["tok"]))
    project = Project.open(repo.root, env={})
    for name, path in artifacts.items():
        project.store(path, name)
    repository = root / "model_repository"
    spec = TensorSpec
    publish(
        project,
        "ts",
        repository=repository,
        signature=Signature([spec("x", "float32", [-1, 4])], [spec("y", "float32", [-1, 3])]),
    )
    publish(project, "exp", repository=repository)
    publish(
        project,
        "sum",
        repository=repository,
        signature=Signature([spec("x", "float32", [-1, 4])], [spec("total", "float32", [-1])]),
    )
    publish(project, "onx", repository=repository, options=ServingOptions(warmup=True, max_queue_size=64))
    publish(
        project,
        "two",
        repository=repository,
        signature=Signature(
            [spec("a", "float16", [-1, 3]), spec("b", "int64", [-1, 2])],
            [spec("sum", "float16", [-1, 3]), spec("plus_one", "int32", [-1, 2])],
        ),
    )
    publish(
        project,
        "tok",
        repository=repository,
        signature=Signature(
            [spec("ids", "int64", [-1, -1]), spec("mask", "bool", [-1, -1])], [spec("pooled", "float32", [-1, 8])]
        ),
    )
    server = TritonServer(
        repository=str(repository), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        yield Served(server, artifacts)
        print(server.logs(last=40))  # shown when a test fails


def test_each_format_answers_what_the_model_computes_in_process(served: Served) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ts = torch.jit.load(str(served.artifacts["ts"]))
    exp = torch.export.load(str(served.artifacts["exp"])).module()
    with torch.inference_mode():
        expected = ts(torch.from_numpy(x))
        torch.testing.assert_close(exp(torch.from_numpy(x)), expected)
    torch.testing.assert_close(torch.from_numpy(served.infer("ts", {"x": x})["y"]).float(), expected)
    torch.testing.assert_close(torch.from_numpy(served.infer("exp", {"input": x})["output"]).float(), expected)

    import onnxruntime as ort

    onnx_expected = ort.InferenceSession(str(served.artifacts["onx"])).run(None, {"x": x})[0]
    np.testing.assert_allclose(served.infer("onx", {"x": x})["y"], onnx_expected, rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served: Served) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(48)]
    before = {b["batch_size"] for b in served.stats("ts").get("batch_stats", [])}

    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda x: served.infer("ts", {"x": x})["y"], inputs))

    ts = torch.jit.load(str(served.artifacts["ts"]))
    with torch.inference_mode():
        for x, y in zip(inputs, answers, strict=True):
            torch.testing.assert_close(torch.from_numpy(y).float(), ts(torch.from_numpy(x)))
    sizes = {b["batch_size"] for b in served.stats("ts")["batch_stats"]} - before
    assert max(sizes) > 1, f"Triton executed only batches of sizes {sizes}"


def test_a_bad_request_fails_alone(served: Served) -> None:
    good = np.ones((1, 4), np.float32)

    def send(x: np.ndarray) -> str:
        try:
            served.infer("ts", {"x": x})
        except urllib.error.HTTPError as e:
            return f"{e.code}: {json.loads(e.read())['error']}"
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, [good, good, np.ones((1, 5), np.float32), good, np.ones((1, 4), np.int64), good]))

    assert [r == "ok" for r in results] == [True, True, False, True, False, True]
    assert "unexpected shape for input 'x'" in results[2]
    assert "data-type is 'INT64', but model 'ts' expects 'FP32'" in results[4]


def test_a_request_that_breaks_the_model_fails_alone_within_its_batch(served: Served) -> None:
    mask = np.ones((1, 3), dtype=bool)
    ids = [np.array([[1, 2, 3]])] * 6 + [np.array([[1000, 2, 3]])] + [np.array([[4, 5, 6]])] * 6

    def send(x: np.ndarray) -> str:
        try:
            served.infer("tok", {"ids": x, "mask": mask})
        except urllib.error.HTTPError as e:
            return str(json.loads(e.read())["error"])
        return "ok"

    with ThreadPoolExecutor(len(ids)) as pool:
        results = list(pool.map(send, ids))

    assert results[:6] == ["ok"] * 6
    assert results[7:] == ["ok"] * 6
    assert "tok: the model failed on a batch of 1 request(s)" in results[6]


def test_two_inputs_two_outputs_with_mixed_dtypes(served: Served) -> None:
    import tritonclient.http as httpclient

    a = np.full((2, 3), 1.5, np.float16)
    b = np.arange(4, dtype=np.int64).reshape(2, 2)
    # FP16 has no JSON form in KServe v2: send binary tensors, as tritonclient does
    client = httpclient.InferenceServerClient(served.server.url.removeprefix("http://"))
    tensors = [httpclient.InferInput("a", list(a.shape), "FP16"), httpclient.InferInput("b", list(b.shape), "INT64")]
    tensors[0].set_data_from_numpy(a)
    tensors[1].set_data_from_numpy(b)
    result = client.infer("two", tensors)
    out = {"sum": result.as_numpy("sum"), "plus_one": result.as_numpy("plus_one")}
    expected_sum, expected_plus = TwoInTwoOut()(torch.from_numpy(a), torch.from_numpy(b))
    torch.testing.assert_close(torch.tensor(out["sum"]), expected_sum)
    torch.testing.assert_close(torch.tensor(out["plus_one"]), expected_plus)


def test_int64_token_inputs(served: Served) -> None:
    ids = np.random.default_rng(2).integers(0, 100, (2, 6))
    mask = np.ones((2, 6), dtype=bool)
    out = served.infer("tok", {"ids": ids, "mask": mask})
    with torch.inference_mode():
        expected = TokenPooler().eval()(torch.from_numpy(ids), torch.from_numpy(mask))
    torch.testing.assert_close(torch.from_numpy(out["pooled"]).float(), expected)


def test_grpc_client_gets_the_same_answer(served: Served) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.server.grpc_port}")
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("ts", [tensor]).as_numpy("y")
    np.testing.assert_allclose(result, served.infer("ts", {"x": x})["y"], rtol=1e-6)


def test_publish_to_s3_and_triton_serves_the_bucket(
    served: Served, s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitRepo.create(tmp_path / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    monkeypatch.setenv("NEXUS_STORAGE", f"s3://{s3_bucket}/models")
    monkeypatch.setenv("NEXUS_ENDPOINT_URL", s3_server.endpoint)
    project = Project.open(repo.root)
    project.store(served.artifacts["exp"], "exp")

    result = publish(project, "exp", repository=f"s3://{s3_bucket}/repository")

    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert [k for k in keys if k.startswith("repository/")] == [
        "repository/exp/1/model.pt2",
        "repository/exp/1/model.py",
        "repository/exp/config.pbtxt",
    ]
    assert result.triton_repository == f"s3://{s3_server.endpoint}/{s3_bucket}/repository"
    server = TritonServer(
        repository=result.triton_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        from_s3 = Served(server, served.artifacts)
        x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
        np.testing.assert_allclose(
            from_s3.infer("exp", {"input": x})["output"], served.infer("exp", {"input": x})["output"]
        )


def test_triton_accepts_warmup_and_a_bounded_queue(served: Served) -> None:
    # Triton runs model_warmup while it loads the model and fails the load if the warm-up fails:
    # a READY model with this config has answered a full batch of zeros through model.py.
    with urllib.request.urlopen(f"{served.server.url}/v2/models/onx/config", timeout=10) as r:
        config = json.loads(r.read())
    assert config["model_warmup"][0]["batch_size"] == 32
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    with urllib.request.urlopen(f"{served.server.url}/v2/models/onx/ready", timeout=10) as r:
        assert r.status == 200


def test_an_output_with_one_value_per_sample_is_served_as_batch_by_one(served: Served) -> None:
    # Triton needs a dimension per tensor: the config says dims [1] with `reshape: []`, so the model
    # returns [batch] and clients receive [batch, 1]
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    total = served.infer("sum", {"x": x})["total"]
    assert total.shape == (3, 1)
    np.testing.assert_allclose(total[:, 0], x.sum(axis=1), rtol=1e-5)

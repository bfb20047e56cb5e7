"""`nexus predict` against a real Triton: HTTP and gRPC, random or file inputs, and its errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import free_port, serve_one_model
from nexus.cli import app
from nexus.errors import PredictError
from nexus.serving.predict import predict, random_inputs
from nexus.serving.server import TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    triton, artifact = serve_one_model(tmp_path_factory.mktemp("predict"))
    with triton:
        yield triton, artifact


def reference(artifact: Path, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.export.load(str(artifact)).module()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_random_inputs_answer_what_the_model_computes(server: tuple[TritonServer, Path], protocol: str) -> None:
    triton, artifact = server
    address = triton.url if protocol == "http" else f"127.0.0.1:{triton.grpc_port}"
    outputs = predict("m", server=address, protocol=protocol)
    x = random_inputs({"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]})["input"]
    assert list(outputs) == ["output"]
    np.testing.assert_allclose(outputs["output"], reference(artifact, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_with_a_priority_is_answered_the_same(server: tuple[TritonServer, Path], protocol: str) -> None:
    """Triton takes the priority over both protocols (tests/test_priorities.py shows it jumping a queue)."""
    triton, artifact = server
    address = triton.url if protocol == "http" else f"127.0.0.1:{triton.grpc_port}"
    args = ["predict", "m", "--random", "--priority", "1", "--server", address, "--protocol", protocol, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    x = random_inputs({"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]})["input"]
    got = np.array(json.loads(result.stdout)["output"]["data"], np.float32)
    np.testing.assert_allclose(got, reference(artifact, x), rtol=1e-5, atol=1e-6)


def test_cli_sends_npy_files_and_writes_the_outputs(server: tuple[TritonServer, Path], tmp_path: Path) -> None:
    triton, artifact = server
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)

    printed = CliRunner().invoke(app, ["predict", "m", "-i", f"input={tmp_path / 'x.npy'}", "--server", triton.url])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.splitlines()[0] == "output: float32[3, 3]"

    saved = CliRunner().invoke(
        app, ["predict", "m", "-i", f"input={tmp_path / 'x.npy'}", "--server", triton.url, "-o", str(tmp_path / "out")]
    )
    assert saved.exit_code == 0, saved.output
    np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy"), reference(artifact, x), rtol=1e-5, atol=1e-6)

    as_json = CliRunner().invoke(
        app, ["predict", "m", "-i", f"input={tmp_path / 'x.npy'}", "--server", triton.url, "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    output = json.loads(as_json.stdout)["output"]
    assert (output["dtype"], output["shape"]) == ("float32", [3, 3])
    np.testing.assert_allclose(np.array(output["data"]), reference(artifact, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--random", "--server", "http://127.0.0.1:{closed}"], "cannot reach Triton at http://127.0.0.1:"),
        (["-i", "input=missing.npy", "--server", "{url}"], "input file missing.npy does not exist"),
        (["-i", "wrong={npy}", "--server", "{url}"], "m takes inputs ['input'], got ['wrong']"),
        ([], "give --input NAME=FILE.npy (one per input) or --random"),
        (["--random", "--priority", "-1", "--server", "{url}"], "--priority -1 is below 0"),
    ],
)
def test_errors_are_one_line(
    server: tuple[TritonServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    triton, _ = server
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    monkeypatch.chdir(tmp_path)
    filled = [a.format(closed=free_port(), url=triton.url, npy=tmp_path / "x.npy") for a in args]
    result = CliRunner().invoke(app, ["predict", "m", *filled])
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_model_that_is_not_served_is_named(server: tuple[TritonServer, Path]) -> None:
    triton, _ = server
    with pytest.raises(PredictError, match=r"model 'nope' is not ready on http://127\.0\.0\.1:"):
        predict("nope", server=triton.url)

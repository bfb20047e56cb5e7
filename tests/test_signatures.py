"""Signatures as a Triton user expects them: a TorchScript version stored without one says how to give it,
`--sample NAME=FILE.npy` reads it off one run, `nexus signature` gives it later, and torch.export
outputs get predictable names."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import GitRepo, free_port, make_torch_export
from nexus.cli import app
from nexus.errors import SampleError, SignatureError, SignatureMissingError
from nexus.registry import Project
from nexus.registry.formats import inspect_artifact, model_io
from nexus.registry.metadata import META_FILE
from nexus.serving.model_config import parse_config
from nexus.serving.publish import publish
from nexus.tensors import Signature, TensorSpec

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


class Masked(torch.nn.Module):
    """Two named inputs, two outputs: what a TorchScript file can say about itself, and no more."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.linear(image * mask.to(image.dtype))
        return hidden, hidden.sum(dim=1)


class Heads(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x * 2, "total": x.sum(dim=1)}


@pytest.fixture
def masked(tmp_path: Path) -> Path:
    path = tmp_path / "files" / "masked.pt"
    path.parent.mkdir()
    torch.jit.script(Masked().eval()).save(str(path))
    return path


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {
        "image": tmp_path / "image.npy",
        "mask": tmp_path / "mask.npy",
    }
    np.save(files["image"], rng.standard_normal((2, 4)).astype(np.float32))
    np.save(files["mask"], rng.integers(0, 2, (2, 4)).astype(bool))
    return files


def sample_args(files: dict[str, Path]) -> list[str]:
    return [arg for name, path in files.items() for arg in ("--sample", f"{name}={path}")]


MASKED_SIGNATURE = Signature(
    inputs=[TensorSpec("image", "float32", [-1, 4]), TensorSpec("mask", "bool", [-1, 4])],
    outputs=[TensorSpec("output_0", "float32", [-1, 3]), TensorSpec("output_1", "float32", [-1])],
)


@pytest.mark.slow
def test_torchscript_stored_without_a_signature_prints_one_note_with_the_command_to_give_one(
    repo: GitRepo, masked: Path, run_nexus: RunNexus
) -> None:
    stored = run_nexus("store", str(masked), "m", cwd=repo.root)

    assert stored.returncode == 0, stored.stderr
    assert stored.stderr.count("\n") == 1
    assert stored.stderr.startswith("Note: m v1 is torchscript")
    assert "cannot be served until one is given" in stored.stderr
    command = "nexus signature m --version 1 --sample image=IMAGE.npy --sample mask=MASK.npy"
    alternative = (
        "--input image:DTYPE:DIMS --input mask:DTYPE:DIMS --output output_0:DTYPE:DIMS --output output_1:DTYPE:DIMS"
    )
    assert command in stored.stderr
    assert alternative in stored.stderr
    assert Project.open().resolve("m").signature is None

    shown = run_nexus("signature", "m", cwd=repo.root)
    assert shown.returncode == 0, shown.stderr
    assert command in shown.stdout
    assert "none recorded" in shown.stdout

    with pytest.raises(SignatureMissingError) as refused:  # publish says the same, with the same command
        publish(Project.open(), "m", repository=repo.root / "served")
    assert refused.value.command.startswith(command)
    assert alternative in refused.value.command
    assert not (repo.root / "served").exists()


@pytest.mark.slow
def test_a_version_stored_with_samples_is_served_by_triton_with_no_other_flag(
    repo: GitRepo, masked: Path, samples: dict[str, Path], tmp_path: Path
) -> None:
    from nexus.serving.predict import predict
    from nexus.serving.server import TritonServer

    cli = CliRunner()
    stored = cli.invoke(app, ["store", str(masked), "m", *sample_args(samples)])
    assert stored.exit_code == 0, stored.output
    assert "Note:" not in stored.stderr
    assert Project.open().resolve("m").signature == MASKED_SIGNATURE

    published = cli.invoke(app, ["publish", "m", "-r", str(tmp_path / "repository")])
    assert published.exit_code == 0, published.output
    server = TritonServer(
        repository=str(tmp_path / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    rng = np.random.default_rng(1)
    image = rng.standard_normal((5, 4)).astype(np.float32)
    mask = rng.integers(0, 2, (5, 4)).astype(bool)
    with server:
        answer = predict("m", {"image": image, "mask": mask}, server=server.url)
    with torch.inference_mode():
        expected = torch.jit.load(str(masked))(torch.from_numpy(image), torch.from_numpy(mask))  # type: ignore[no-untyped-call]
    assert sorted(answer) == ["output_0", "output_1"]
    np.testing.assert_allclose(answer["output_0"], expected[0].numpy(), rtol=1e-5, atol=1e-6)
    # one value per sample: Triton's config says dims [1] with `reshape: []`, so clients receive [batch, 1]
    assert answer["output_1"].shape == (5, 1)
    np.testing.assert_allclose(answer["output_1"][:, 0], expected[1].numpy(), rtol=1e-5, atol=1e-6)


def test_nexus_signature_records_it_on_a_stored_version_and_later_publishes_use_it(
    repo: GitRepo, masked: Path, tmp_path: Path
) -> None:
    project = Project.open()
    project.store(masked, "m")
    cli = CliRunner()
    given = [
        *("--input", "image:float32:4", "--input", "mask:bool:4"),
        *("--output", "output_0:float32:3", "--output", "output_1:float32:"),
    ]

    recorded = cli.invoke(app, ["signature", "m", "--version", "1", *given])

    assert recorded.exit_code == 0, recorded.output
    assert "Recorded the signature of m v1" in recorded.stdout
    assert Project.open().resolve("m").signature == MASKED_SIGNATURE
    assert "input mask bool[-1, 4]" in cli.invoke(app, ["signature", "m"]).stdout
    publish(Project.open(), "m", repository=tmp_path / "repository")
    config = parse_config((tmp_path / "repository/m/config.pbtxt").read_text())
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [4]), ("mask", [4])]
    assert [t.name for t in config.output] == ["output_0", "output_1"]


def test_set_signature_from_samples_in_the_library_and_dict_outputs_keep_their_keys(
    repo: GitRepo, tmp_path: Path
) -> None:
    path = tmp_path / "heads.pt"
    torch.jit.script(Heads()).save(str(path))
    project = Project.open()
    assert "--output NAME:DTYPE:DIMS (one per output)" in (project.store(path, "h").notice or "")

    result = project.set_signature("h", sample={"x": np.ones((2, 3), dtype=np.float32)}, commit=True)

    assert result.signature == Signature(
        [TensorSpec("x", "float32", [-1, 3])],
        [TensorSpec("logits", "float32", [-1, 3]), TensorSpec("total", "float32", [-1])],
    )
    assert result.previous is None
    assert result.metadata_commit == repo.head
    assert repo.status() == ""
    assert publish(Project.open(), "h", repository=tmp_path / "repository").written


def test_a_signature_the_model_does_not_fit_is_refused_and_nothing_is_recorded(repo: GitRepo, masked: Path) -> None:
    project = Project.open()
    project.store(masked, "m")
    before = (repo.root / META_FILE).read_bytes()
    wrong = Signature(
        MASKED_SIGNATURE.inputs, [TensorSpec("output_0", "float32", [-1, 7]), MASKED_SIGNATURE.outputs[1]]
    )
    with pytest.raises(SignatureError, match="output 'output_0' is float32"):
        project.set_signature("m", wrong)
    with pytest.raises(SignatureError, match="give the signature to record: nexus signature m --version 1"):
        project.set_signature("m")
    assert (repo.root / META_FILE).read_bytes() == before


def _bad_samples(tmp_path: Path, samples: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    np.save(tmp_path / "wide.npy", np.ones((2, 5), dtype=np.float32))
    np.savez(tmp_path / "both.npz", image=np.ones((2, 4)))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    mask = f"mask={samples['mask']}"
    return {
        "missing file": (["--sample", f"image={tmp_path / 'nope.npy'}", "--sample", mask], "does not exist"),
        "not npy": (["--sample", f"image={tmp_path / 'junk.npy'}", "--sample", mask], "is not a .npy array"),
        "npz": (["--sample", f"image={tmp_path / 'both.npz'}", "--sample", mask], "save each input with numpy.save"),
        "wrong name": (["--sample", f"img={samples['image']}", "--sample", mask], "--sample image=FILE.npy"),
        "model fails": (["--sample", f"image={tmp_path / 'wide.npy'}", "--sample", mask], "the model fails on"),
        "no equals": (["--sample", str(samples["image"])], "is not NAME=FILE.npy"),
    }


@pytest.mark.parametrize("case", ["missing file", "not npy", "npz", "wrong name", "model fails", "no equals"])
def test_a_bad_sample_is_a_one_line_error_and_changes_nothing(
    repo: GitRepo, masked: Path, samples: dict[str, Path], tmp_path: Path, case: str
) -> None:
    args, message = _bad_samples(tmp_path, samples)[case]
    cli = CliRunner()

    refused_store = cli.invoke(app, ["store", str(masked), "m", *args])

    assert refused_store.exit_code == 1
    assert refused_store.stderr.startswith("Error: ")
    assert refused_store.stderr.count("\n") == 1
    assert message in refused_store.stderr
    assert not (repo.root / META_FILE).exists()
    assert not (repo.root / ".nexus" / "storage").exists()

    Project.open().store(masked, "m")
    before = (repo.root / META_FILE).read_bytes()
    refused = cli.invoke(app, ["signature", "m", *args])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: ")
    assert refused.stderr.count("\n") == 1
    assert message in refused.stderr
    assert (repo.root / META_FILE).read_bytes() == before


def test_samples_of_another_batch_size_or_scalars_are_refused_with_the_fix(repo: GitRepo, masked: Path) -> None:
    project = Project.open()
    with pytest.raises(SampleError, match="give every input the same batch size"):
        project.store(masked, "m", sample={"image": np.ones((2, 4), np.float32), "mask": np.ones((3, 4), bool)})
    with pytest.raises(SampleError, match="is a scalar; give a batch"):
        project.store(masked, "m", sample={"image": np.float32(1.0), "mask": np.ones((3, 4), bool)})
    with pytest.raises(SignatureError, match="not both"):
        project.store(masked, "m", signature=MASKED_SIGNATURE, sample={"image": np.ones((2, 4), np.float32)})
    assert not (repo.root / META_FILE).exists()


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + y, x - y


def test_export_outputs_are_named_output_or_output_n_or_after_dict_keys(tmp_path: Path) -> None:
    from torch.export import Dim

    batch = Dim("batch")
    single = make_torch_export(tmp_path / "single.pt2")
    pair = tmp_path / "pair.pt2"
    torch.export.save(
        torch.export.export(Pair(), (torch.randn(2, 3), torch.randn(2, 3)), dynamic_shapes=({0: batch}, {0: batch})),
        str(pair),
    )
    heads = tmp_path / "heads.pt2"
    torch.export.save(torch.export.export(Heads(), (torch.randn(2, 3),)), str(heads))

    def names(path: Path) -> tuple[list[str], list[str]]:
        signature = inspect_artifact(path).signature
        assert signature is not None
        return [t.name for t in signature.inputs], [t.name for t in signature.outputs]

    assert names(single) == (["input"], ["output"])
    assert names(pair) == (["x", "y"], ["output_0", "output_1"])
    assert names(heads) == (["x"], ["logits", "total"])
    assert model_io(pair, "torch_export").outputs == ["output_0", "output_1"]

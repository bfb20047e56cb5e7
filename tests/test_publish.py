"""`nexus publish` writes a Triton model repository: layout, validation, and errors that write nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import GCSServer
from helpers import GitRepo
from nexus.cli import app
from nexus.errors import ModelLoadError, PublishError, SignatureError, SignatureMissingError, VersionNotFoundError
from nexus.registry import Project
from nexus.serving.model_config import parse_config
from nexus.serving.publish import publish
from nexus.serving.repository import template_source
from nexus.tensors import Signature, TensorSpec

#: --input/--output for the TorchScript MLP of helpers.make_torchscript, which records no signature
MLP_SIGNATURE = Signature([TensorSpec("x", "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 3])])

TEMPLATE = Path(__file__).parents[1] / "model_repository_templates" / "python_backend" / "model.py"


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_publish_writes_config_model_py_and_the_verified_artifact(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    out = tmp_path / "repo"

    result = publish(project, "m", repository=out)

    assert sorted(tree(out)) == ["m/1/model.pt2", "m/1/model.py", "m/config.pbtxt"]
    assert (out / "m/1/model.py").read_text() == TEMPLATE.read_text() == template_source()
    assert (out / "m/1/model.pt2").read_bytes() == models["torch_export"].read_bytes()
    config = parse_config((out / "m/config.pbtxt").read_text())
    assert config.name == "m"
    assert list(config.version_policy.specific.versions) == [1]
    assert result.written


def test_default_repository_is_under_dot_nexus_or_as_configured(repo: GitRepo, models: dict[str, Path]) -> None:
    project = Project.open()
    project.store(models["onnx"], "m")
    assert publish(project, "m").repository == repo.root / ".nexus" / "model_repository"
    assert (repo.root / ".nexus/model_repository/m/1/model.onnx").exists()
    (repo.root / ".nexusrc").write_text('[publish]\nrepository = "serving/repo"\n')
    assert publish(Project.open(), "m").repository == repo.root / "serving" / "repo"
    assert (repo.root / "serving/repo/m/config.pbtxt").exists()


def test_models_and_versions_live_side_by_side_and_config_follows_the_published_version(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torch_export"], "a")
    project.store(models["onnx"], "b")
    repo.gen({"train.py": "v2\n"}, commit="v2")
    sig = Signature([TensorSpec("input", "float32", [-1, 4])], [TensorSpec("out", "float32", [-1, 3])])
    project.store(models["torchscript"], "a")
    out = tmp_path / "repo"
    publish(project, "a", version=1, repository=out)
    publish(project, "b", repository=out)
    publish(project, "a", repository=out, signature=sig)

    assert sorted(tree(out)) == [
        "a/1/model.pt2", "a/1/model.py", "a/2/model.pt", "a/2/model.py", "a/config.pbtxt",
        "b/1/model.onnx", "b/1/model.py", "b/config.pbtxt",
    ]  # fmt: skip
    assert list(parse_config((out / "a/config.pbtxt").read_text()).version_policy.specific.versions) == [2]


def test_republishing_replaces_the_version_folder_whole(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    out = tmp_path / "repo"
    publish(project, "m", repository=out)
    (out / "m/1/stale.txt").write_text("left over")

    publish(project, "m", repository=out)

    assert sorted(tree(out)) == ["m/1/model.pt2", "m/1/model.py", "m/config.pbtxt"]
    assert [p.name for p in (out / "m").iterdir() if p.name.startswith(".")] == []


def test_dry_run_writes_nothing(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    result = publish(project, "m", repository=tmp_path / "repo", dry_run=True)
    assert not result.written
    assert parse_config(result.config_text).name == "m"
    assert not (tmp_path / "repo").exists()


def test_torchscript_needs_a_signature(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    with pytest.raises(SignatureMissingError, match="records no input/output signature") as refused:
        publish(project, "m", repository=tmp_path / "repo")
    assert refused.value.command.startswith("nexus signature m --version 1 --sample input=INPUT.npy")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ([TensorSpec("x", "float32", [-1, 5])], [TensorSpec("y", "float32", [-1, 3])], "the model fails on inputs x"),
        (
            [TensorSpec("x", "float32", [-1, 4])],
            [TensorSpec("y", "float32", [-1, 7])],
            r"output 'y' is float32\[3, 3\]",
        ),
        ([TensorSpec("x", "float32", [-1, 4])], [TensorSpec("y", "int64", [-1, 3])], "the signature says int64"),
        (
            [TensorSpec("x", "float32", [-1, 4])],
            [TensorSpec("y", "float32", [-1, 3]), TensorSpec("z", "float32", [-1, 3])],
            "returns 1 outputs, the signature declares 2",
        ),
    ],
)
def test_a_signature_that_does_not_match_the_model_is_refused_and_nothing_written(
    repo: GitRepo,
    models: dict[str, Path],
    tmp_path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    message: str,
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    out = tmp_path / "repo"
    publish(
        project,
        "m",
        repository=out,
        signature=MLP_SIGNATURE,
    )
    before = tree(out)

    with pytest.raises(SignatureError, match=message):
        publish(project, "m", repository=out, signature=Signature(inputs, outputs))
    assert tree(out) == before


def test_a_model_that_cannot_be_loaded_is_refused_and_nothing_written(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.pt"
    data = bytearray(models["torchscript"].read_bytes())
    start = data.index(b"code/")  # inside the archive: the zip directory stays readable, a member's CRC breaks
    data[start + 200 : start + 260] = bytes(60)
    damaged.write_bytes(bytes(data))
    project = Project.open()
    project.store(damaged, "m")
    out = tmp_path / "repo"

    with pytest.raises(ModelLoadError, match="the torchscript artifact cannot be loaded"):
        publish(
            project,
            "m",
            repository=out,
            signature=MLP_SIGNATURE,
        )
    assert not out.exists()


def test_unknown_version_is_refused(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["onnx"], "m")
    with pytest.raises(VersionNotFoundError):
        publish(project, "m", version=4, repository=tmp_path / "repo")


def test_unwritable_repository_is_refused(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["onnx"], "m")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PublishError, match="choose a writable --repository"):
        publish(project, "m", repository=blocker / "repo")


def test_cli_publish_and_dry_run(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["store", str(models["torchscript"]), "m"]).exit_code == 0
    args = ["publish", "m", "-r", str(tmp_path / "repo"), "--input", "x:float32:4", "--output", "y:float32:3"]

    dry = runner.invoke(app, [*args, "--dry-run", "--max-batch-size", "8"])
    assert dry.exit_code == 0, dry.output
    assert "max_batch_size: 8" in dry.stdout
    assert "Would write to" in dry.stdout
    assert not (tmp_path / "repo").exists()

    real = runner.invoke(app, [*args, "--instances", "3", "--kind", "cpu", "--max-queue-delay-us", "500"])
    assert real.exit_code == 0, real.output
    assert real.stdout.splitlines()[0].startswith(f"Published m v1 (commit {repo.head[:8]}, torchscript) to ")
    assert real.stdout.splitlines()[1] == "  serving: 3 instances, adaptive batches of up to 32"
    config = parse_config((tmp_path / "repo/m/config.pbtxt").read_text())
    assert config.instance_group[0].count == 3

    auto = runner.invoke(app, [*args, "--max-queue-size", "9"])
    assert auto.exit_code == 0, auto.output
    assert auto.stdout.splitlines()[1] == "  serving: 2 instances (auto), adaptive batches of up to 32, queue of 9"
    assert parse_config((tmp_path / "repo/m/config.pbtxt").read_text()).instance_group[0].count == 2

    for wrong in ("0", "two"):
        refused = runner.invoke(app, [*args, "--instances", wrong])
        assert refused.exit_code == 1
        assert refused.stderr.startswith(f"Error: --instances must be auto or a count of at least 1, not '{wrong}'")

    older = runner.invoke(app, [*args, "--version", "1"])
    assert older.exit_code == 0
    assert "Note:" not in older.stderr  # v1 is the latest

    bad = runner.invoke(app, ["publish", "m", "-r", str(tmp_path / "repo")])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("Error: m v1 is torchscript, which records no input/output signature")


def test_store_records_a_given_signature_after_a_forward_pass_and_publish_uses_it(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    bad = runner.invoke(
        app, ["store", str(models["torchscript"]), "m", "--input", "x:float32:5", "--output", "y:float32:3"]
    )
    assert bad.exit_code == 1
    assert "the model fails on inputs x[3, 5]:float32" in bad.stderr
    assert not (repo.root / ".nexus_meta.json").exists()

    good = runner.invoke(
        app, ["store", str(models["torchscript"]), "m", "--input", "x:float32:4", "--output", "y:float32:3"]
    )
    assert good.exit_code == 0, good.output
    signature = Project.open().resolve("m").signature
    assert signature is not None
    assert [(t.name, t.shape) for t in signature.inputs] == [("x", [-1, 4])]
    result = publish(Project.open(), "m", repository=tmp_path / "repo")
    assert [i.name for i in parse_config(result.config_text).input] == ["x"]


def test_publish_to_a_gcs_bucket_uploads_the_same_layout(
    repo: GitRepo, models: dict[str, Path], gcs_server: GCSServer, gcs_bucket: str
) -> None:
    project = Project.open()
    project.store(models["onnx"], "m")

    result = publish(project, "m", repository=f"gs://{gcs_bucket}/triton")

    blobs = {b.name: b for b in gcs_server.client().list_blobs(gcs_bucket)}
    assert sorted(blobs) == ["triton/m/1/model.onnx", "triton/m/1/model.py", "triton/m/config.pbtxt"]
    assert blobs["triton/m/1/model.onnx"].download_as_bytes() == models["onnx"].read_bytes()
    assert parse_config(blobs["triton/m/config.pbtxt"].download_as_bytes().decode()) == parse_config(result.config_text)
    assert result.triton_repository == f"gs://{gcs_bucket}/triton"


def test_cli_says_when_the_published_version_is_not_the_latest(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["onnx"], "m")
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(models["torch_export"], "m")

    result = CliRunner().invoke(app, ["publish", "m", "--version", "1", "-r", str(tmp_path / "repo")])

    assert result.exit_code == 0, result.output
    assert "Note: v1 is not the latest version in .nexus_meta.json, but the config serves it." in result.stderr
    assert "nexus rollback m --to 1" in result.stderr


def test_cli_warns_about_priorities_with_one_instance_and_still_publishes(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    Project.open().store(models["onnx"], "m")
    out = tmp_path / "repo"

    one = CliRunner().invoke(app, ["publish", "m", "-r", str(out), "--priority-levels", "2", "--instances", "1"])
    two = CliRunner().invoke(app, ["publish", "m", "-r", str(tmp_path / "two"), "--priority-levels", "2"])

    assert one.exit_code == 0, one.output
    assert "Warning: with priority levels and one instance" in one.stderr
    assert "publish with --instances 2 or more" in one.stderr.replace("\n", " ")
    assert (out / "m" / "config.pbtxt").is_file()
    assert two.exit_code == 0, two.output
    assert "Warning" not in two.stderr

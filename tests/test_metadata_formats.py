"""`.nexus_meta.json` parsing and writing, and model format detection."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from helpers import GitRepo
from nexus.errors import CorruptMetadataError, PickledModelError, UnsupportedFormatError
from nexus.registry import Project
from nexus.registry.formats import detect_format, inspect_artifact
from nexus.registry.metadata import META_FILE, HistoryEvent, Metadata, MetadataFile


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"schema_version": 9, "models": {}}', "schema_version 9"),
        ('{"schema_version": 1}', "missing field 'models'"),
        ('{"schema_version": 1, "models": {"m": {"versions": [], "history": []}}}', "0 versions are marked latest"),
    ],
)
def test_corrupt_metadata_is_an_error_that_says_how_to_restore_it(repo: GitRepo, text: str, detail: str) -> None:
    (repo.root / META_FILE).write_text(text)
    with pytest.raises(CorruptMetadataError, match=detail) as info:
        Project.open().versions()
    assert "git checkout -- .nexus_meta.json" in str(info.value)


def test_two_latest_versions_are_corrupt(repo: GitRepo, models: dict[str, Path]) -> None:
    Project.open().store(models["torchscript"], "m")
    data = json.loads((repo.root / META_FILE).read_text())
    data["models"]["m"]["versions"].append({**data["models"]["m"]["versions"][0], "version": 2})
    (repo.root / META_FILE).write_text(json.dumps(data))
    with pytest.raises(CorruptMetadataError, match="2 versions are marked latest"):
        Project.open().versions("m")


def test_metadata_round_trips_and_leaves_no_temporary_files(repo: GitRepo, models: dict[str, Path]) -> None:
    Project.open().store(models["torch_export"], "m")
    text = (repo.root / META_FILE).read_text()
    assert Metadata.from_json(text, repo.root / META_FILE).to_json() == text
    assert sorted(p.name for p in repo.root.iterdir() if p.name.startswith(".nexus")) == [".nexus", META_FILE]


def test_a_failed_update_writes_nothing(repo: GitRepo, tmp_path: Path) -> None:
    meta = MetadataFile(repo.root, tmp_path)

    def failing_update() -> None:
        with meta.update() as m:
            m.model("x").history.append(HistoryEvent("store", "2026-01-01T00:00:00Z", "me", None, 1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_update()
    assert not (repo.root / META_FILE).exists()


@pytest.mark.parametrize(
    ("kind", "fmt"), [("torchscript", "torchscript"), ("torch_export", "torch_export"), ("onnx", "onnx")]
)
def test_formats_are_detected_from_content_not_name(
    models: dict[str, Path], tmp_path: Path, kind: str, fmt: str
) -> None:
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(models[kind].read_bytes())
    assert detect_format(renamed) == fmt


def test_torchscript_has_no_signature_and_export_has_one(models: dict[str, Path]) -> None:
    assert inspect_artifact(models["torchscript"]).signature is None
    sig = inspect_artifact(models["torch_export"]).signature
    assert sig is not None
    assert [(t.name, t.dtype, t.shape) for t in sig.inputs] == [("input", "float32", [-1, 4])]
    assert [(t.dtype, t.shape) for t in sig.outputs] == [("float32", [-1, 3])]


def test_legacy_pickle_is_refused(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps({"weight": [1, 2]}, protocol=2))
    with pytest.raises(PickledModelError):
        detect_format(path)


@pytest.mark.parametrize(
    ("content", "detail"), [(b"", "an empty file"), (b"hello world" * 10, "not a recognised model file")]
)
def test_other_files_are_refused(tmp_path: Path, content: bytes, detail: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormatError, match=detail):
        detect_format(path)


def test_a_zip_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/readme.txt", "hi")
    with pytest.raises(UnsupportedFormatError, match="zip archive that is not a PyTorch model"):
        detect_format(path)

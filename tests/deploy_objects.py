"""Shared by the deploy tests: releases built directly (no storage), the vendored CRDs, and golden files.

Golden files live under tests/data/deploy/golden/; after an intended change, regenerate them with
``NEXUS_UPDATE_GOLDEN=1 pytest tests/test_deploy_*.py`` and review the diff before committing.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from nexus.deploy.validate import load_crds
from nexus.release.manifest import Release, ReleasedModel, ReleaseFile

DATA = Path(__file__).parent / "data"
SCHEMAS = DATA / "k8s-schemas"
GOLDEN = DATA / "deploy" / "golden"


RELEASE_ID = "20261202-101500-3f9a1c2e"
NEXT_ID = "20261203-093000-7b21e0d4"


def model(
    name: str = "mlp",
    *,
    instances: int = 2,
    kind: str = "auto",
    max_batch_size: int = 32,
    sample_bytes: int | None = 28,
    size: int = 1200,
) -> ReleasedModel:
    return ReleasedModel(
        name=name,
        version=3,
        commit="a" * 40,
        sha256="b" * 64,
        size=size,
        instances=instances,
        kind=kind,
        policy="adaptive",
        max_batch_size=max_batch_size,
        sample_bytes=sample_bytes,
    )


def release(
    release_id: str = RELEASE_ID, root: str = "s3://models/releases", models: tuple[ReleasedModel, ...] | None = None
) -> Release:
    models = models if models is not None else (model(),)
    files = tuple(ReleaseFile(f"{m.name}/config.pbtxt", "c" * 64, 300) for m in models) + tuple(
        ReleaseFile(f"{m.name}/{m.version}/model.pt2", m.sha256, m.size) for m in models
    )
    return Release(
        id=release_id, root=root, created="2026-12-02T10:15:00Z", commit="d" * 40, models=models, files=files
    )


def sample_release(root: str = "s3://ml-models/releases", policy: str = "adaptive", kind: str = "auto") -> Release:
    """A release of two models, as `nexus release create` would describe it."""
    files = (
        ReleaseFile("mlp/config.pbtxt", "a" * 64, 412),
        ReleaseFile("mlp/3/model.py", "b" * 64, 5120),
        ReleaseFile("mlp/3/model.pt2", "c" * 64, 20480),
        ReleaseFile("ranker/config.pbtxt", "d" * 64, 398),
        ReleaseFile("ranker/1/model.py", "b" * 64, 5120),
        ReleaseFile("ranker/1/model.onnx", "e" * 64, 8192),
    )
    models = (
        ReleasedModel("mlp", 3, "1" * 40, "c" * 64, 20480, 2, kind, policy, 32, 28),
        ReleasedModel("ranker", 1, "2" * 40, "e" * 64, 8192, 1, "cpu", "adaptive", 0, None),
    )
    return Release("20261202-101500-3f9a1c2e", root, "2026-12-02T10:15:00Z", "3" * 40, models, files)


@cache
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    return load_crds(sorted(SCHEMAS.glob("*_*.yaml")))


def dump(objects: list[dict[str, Any]] | dict[str, Any]) -> str:
    if isinstance(objects, dict):
        return yaml.safe_dump(objects, sort_keys=False)
    return yaml.safe_dump_all(objects, sort_keys=False)


def check_golden(name: str, text: str) -> None:
    """``text`` equals the golden file ``name`` (written instead, with NEXUS_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if os.environ.get("NEXUS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with NEXUS_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs: an intended change? regenerate and review"

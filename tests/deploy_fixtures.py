"""Releases built directly (no storage), for the deployment tests."""

from __future__ import annotations

from nexus.release import Release, ReleasedModel, ReleaseFile

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

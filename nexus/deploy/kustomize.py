"""A kustomize base on disk: one YAML file per object, `kustomization.yaml`, and `nexus-deploy.json`.

The folder is meant to be committed, and applied with `kubectl apply -k FOLDER` (or used as the base
of an overlay). A re-render replaces exactly the files the previous render wrote (its
`nexus-deploy.json` lists them) and refuses to overwrite a file in the folder it did not write.
Every object is validated (:func:`nexus.deploy.validate.validate_objects`) before anything is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nexus.atomic import atomic_write_text, disk_full_as_error
from nexus.deploy.record import RECORD, DeployRecord, read_record
from nexus.deploy.schemas import crds_for
from nexus.deploy.validate import validate_objects
from nexus.errors import DeployError

KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class WrittenBase:
    folder: Path
    #: The files written, the record last; the stale ones removed.
    files: tuple[str, ...]
    removed: tuple[str, ...]
    record: DeployRecord


def to_yaml(obj: Mapping[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False))


def file_names(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """`deployment.yaml`, `service.yaml`, ...: the kind in lowercase, with `-<name>` when two share a kind."""
    kinds = Counter(str(o["kind"]).lower() for o in objects)
    names = []
    for obj in objects:
        kind = str(obj["kind"]).lower()
        names.append(f"{kind}.yaml" if kinds[kind] == 1 else f"{kind}-{obj['metadata']['name']}.yaml")
    if len(set(names)) != len(names):
        raise DeployError("two rendered objects have the same kind and name; give them different names")
    return names


def kustomization(resources: Sequence[str], generators: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
    }
    if generators:
        body["secretGenerator"] = [dict(g) for g in generators]
    return body


def write_base(
    folder: Path,
    objects: Sequence[Mapping[str, Any]],
    record: DeployRecord,
    crds: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    *,
    extra_files: Mapping[str, str] | None = None,
    generators: Sequence[Mapping[str, Any]] = (),
) -> WrittenBase:
    """Validate ``objects`` (custom ones against ``crds``, default the vendored CRDs), then write them as a
    kustomize base in ``folder``.

    Args:
        extra_files: name -> text of files written beside the objects but not listed as resources (the
            prometheus-adapter values, a `.gitignore`, an example env file).
        generators: the kustomization's ``secretGenerator`` entries.

    Raises:
        ManifestInvalidError: an object does not validate (nothing is written).
        DeployError: a file to write is in the folder and the previous render did not write it.
    """
    validate_objects(objects, crds if crds is not None else crds_for(objects))
    names = file_names(objects)
    texts = {name: to_yaml(obj) for name, obj in zip(names, objects, strict=True)}
    texts[KUSTOMIZATION] = to_yaml(kustomization(names, generators))
    for name, text in (extra_files or {}).items():
        if name in texts or name == RECORD or "/" in name:
            raise DeployError(f"{name!r} cannot be written beside the base (a bug in nexus: please report it)")
        texts[name] = text
    previous = read_record(folder)
    ours = set(previous.files) if previous else set()
    for name in [*texts, RECORD]:
        path = folder / name
        if path.exists() and name not in ours and not (name == RECORD and previous):
            raise DeployError(f"{path} is there and nexus did not write it; move it away, or pass another --out folder")
    new = tuple(texts)
    stale = tuple(sorted(ours - set(new)))
    with disk_full_as_error(folder, elsewhere="pass another --out folder"):
        folder.mkdir(parents=True, exist_ok=True)
        # First a record that names both renders' files: if the render stops half-way, the next one
        # still knows every file here is its own.
        pending = replace(record, files=tuple(sorted(ours | set(new))))
        atomic_write_text(folder / RECORD, pending.to_json())
        for name, text in texts.items():
            atomic_write_text(folder / name, text)
        for name in stale:
            (folder / name).unlink(missing_ok=True)
        final = replace(record, files=new)
        atomic_write_text(folder / RECORD, final.to_json())
    return WrittenBase(folder=folder, files=(*new, RECORD), removed=stale, record=final)
